//! Change feeds: what an origin offers to keep a local copy live (and, later,
//! what two-way sync reads back). One vocabulary for every origin kind: a feed
//! takes a snapshot consistent with a position, then streams the origin's
//! transactions after that position, in commit order, as Arrow rows.
//!
//! A [`Position`] is the origin's own resume point as text (a PostgreSQL LSN such
//! as `0/16B3748`, a MongoDB resume token); it is stored in the local store with
//! the changes it follows, so a restart resumes exactly where the copy stands.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datafusion::arrow::datatypes::FieldRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_plan::SendableRecordBatchStream;
use switchyard_config::Dataset;

use crate::Result;

/// Where a feed stands, as the origin names it.
pub type Position = String;

/// One row change; row numbers index the [`ChangeBatch`]'s rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new row.
    Insert {
        /// The row.
        row: usize,
    },
    /// A changed row: `old` carries the key it had when the key changed (else the
    /// key of `new` finds it); the `unchanged` columns of `new` keep their values.
    Update {
        /// The row's former key, when it changed.
        old: Option<usize>,
        /// The row as it is now.
        new: usize,
        /// Columns the origin did not send (unchanged large values).
        unchanged: Vec<usize>,
        /// The row may be missing from the copy (it entered a filtered dataset):
        /// insert it then.
        upsert: bool,
    },
    /// A row removed (or updated out of a filtered dataset); `old` carries its
    /// key, and a row the copy does not hold is no change.
    Delete {
        /// The key of the row removed.
        old: usize,
    },
    /// Every row removed.
    Truncate,
}

/// Changes of one origin transaction (or part of a large one), in order.
#[derive(Debug, Clone)]
pub struct ChangeBatch {
    /// Every row the changes name, in the copy's schema; key-only rows have
    /// NULLs outside the key.
    pub rows: RecordBatch,
    /// The changes.
    pub changes: Vec<Change>,
}

/// What a change stream says next.
#[derive(Debug, Clone)]
pub enum FeedEvent {
    /// An origin transaction starts; everything up to its [`FeedEvent::Commit`]
    /// is applied as one local transaction.
    Begin {
        /// The origin's id of the transaction (PostgreSQL: its xid), where the
        /// origin says: how a sync dataset recognises its own replayed writes.
        transaction: Option<String>,
    },
    /// Changes of the open transaction.
    Changes(ChangeBatch),
    /// The dataset gained columns (appended, NULL in the rows the copy holds).
    AddColumns(Vec<FieldRef>),
    /// The open transaction committed at the origin: after it the copy stands at
    /// `position`.
    Commit {
        /// The position after this transaction.
        position: Position,
        /// When it committed at the origin.
        committed_at: DateTime<Utc>,
    },
    /// Nothing of the dataset changed up to `position` (the stream is caught up
    /// and idle): storing it lets the origin free what it keeps for the feed.
    Idle {
        /// The position everything before which has been seen.
        position: Position,
    },
}

/// An open change stream.
#[async_trait]
pub trait ChangeStream: Send {
    /// The next event; an error ends the stream ([`crate::ConnectorError::Resnapshot`]
    /// when only a new snapshot can go on).
    async fn next(&mut self) -> Result<FeedEvent>;

    /// Everything up to `position` is durable in the local store: the origin may
    /// forget it. Never called with a position not yet stored.
    fn durable(&mut self, position: &Position);
}

/// A consistent snapshot and the stream of what follows it.
pub struct Snapshot {
    /// The dataset's rows as of `position`.
    pub rows: SendableRecordBatchStream,
    /// Where the stream takes over.
    pub position: Position,
    /// Columns that identify a row (the origin's key or replica identity).
    pub key: Vec<String>,
    /// The stream of the transactions after `position` (started once the
    /// snapshot has been read).
    pub stream: Box<dyn ChangeStream>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("position", &self.position)
            .field("key", &self.key)
            .finish()
    }
}

/// An origin's change feed for its datasets.
#[async_trait]
pub trait ChangeFeed: Send + Sync {
    /// Checks that `dataset` can be kept live (origin settings, privileges, a
    /// key), sets up what the feed needs at the origin, and takes a snapshot
    /// consistent with the stream that follows it. Any earlier feed of the
    /// dataset is replaced.
    async fn snapshot(&self, dataset: &Dataset) -> Result<Snapshot>;

    /// Resumes the stream of `dataset` after `position`, for a copy whose rows
    /// have `schema` and `key`; [`crate::ConnectorError::Resnapshot`] when the
    /// origin no longer has what follows `position`.
    async fn resume(
        &self,
        dataset: &Dataset,
        schema: datafusion::arrow::datatypes::SchemaRef,
        key: &[String],
        position: &Position,
    ) -> Result<Box<dyn ChangeStream>>;

    /// Removes what the feed set up at the origin for `dataset` (its dataset left
    /// the config, or is no longer live).
    async fn drop_feed(&self, dataset: &Dataset) -> Result<()>;
}

/// A shared change feed.
pub type SharedFeed = Arc<dyn ChangeFeed>;
