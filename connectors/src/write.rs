//! Writes: what a statement asks an origin to change, in origin-neutral values the
//! engine builds from the *checked* plan (never the client's text), and the
//! transaction an origin runs them in.
//!
//! Expressions are DataFusion expressions over the target's columns, unqualified;
//! in an `ON CONFLICT ... DO UPDATE` the columns qualified `excluded` are the row
//! proposed for insertion, as in PostgreSQL. Each origin renders them in its own
//! language (SQL through DataFusion's unparser, MongoDB filters and `$set`).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::logical_expr::Expr;
use switchyard_config::Dataset;

use crate::Result;

/// One write statement against one dataset.
#[derive(Debug, Clone)]
pub enum Write {
    /// Rows to insert; the batch's columns are the target columns named in it
    /// (the others take the origin's defaults).
    Insert {
        /// The rows, one batch at a time (a large insert arrives in several).
        rows: RecordBatch,
        /// What to do when a row's key exists.
        on_conflict: Option<OnConflict>,
    },
    /// `SET column = expr` for the rows the filter keeps.
    Update {
        /// Column and its new value, in the statement's order.
        assignments: Vec<(String, Expr)>,
        /// Which rows; `None` is every row (the guardrails refuse that before here).
        filter: Option<Expr>,
    },
    /// The rows the filter keeps.
    Delete {
        /// Which rows.
        filter: Option<Expr>,
    },
}

impl Write {
    /// The statement kind, as in command tags.
    pub fn kind(&self) -> &'static str {
        match self {
            Write::Insert { .. } => "INSERT",
            Write::Update { .. } => "UPDATE",
            Write::Delete { .. } => "DELETE",
        }
    }
}

/// `ON CONFLICT`.
#[derive(Debug, Clone)]
pub struct OnConflict {
    /// The conflict target: key columns, or a constraint's name.
    pub target: ConflictTarget,
    /// `DO NOTHING`, or `DO UPDATE SET ... [WHERE ...]`.
    pub action: ConflictAction,
}

/// What a conflict is detected on.
#[derive(Debug, Clone)]
pub enum ConflictTarget {
    /// Not named: any unique constraint (only with `DO NOTHING`).
    Any,
    /// These columns' unique index.
    Columns(Vec<String>),
    /// `ON CONSTRAINT name`.
    Constraint(String),
}

/// What happens to a conflicting row.
#[derive(Debug, Clone)]
pub enum ConflictAction {
    /// Keep the existing row.
    DoNothing,
    /// Update the existing row.
    DoUpdate {
        /// Column and its new value (`excluded.c` is the proposed row's).
        assignments: Vec<(String, Expr)>,
        /// Which conflicting rows are updated.
        filter: Option<Expr>,
    },
}

/// A write with what the engine needs back from it.
#[derive(Debug, Clone, Copy)]
pub struct WriteRequest<'a> {
    /// The dataset written.
    pub dataset: &'a Dataset,
    /// Its columns, as the planner sees them (what returned rows are decoded as).
    pub schema: &'a SchemaRef,
    /// The change.
    pub write: &'a Write,
    /// Return the written rows (their final state; the deleted rows for DELETE).
    pub returning: bool,
    /// A condition every written row must meet in its final state (a row filter
    /// used as a check, like PostgreSQL's `WITH CHECK`); rows failing it are counted.
    pub check: Option<&'a Expr>,
}

/// What a write did.
#[derive(Debug, Default)]
pub struct Written {
    /// Rows inserted, updated or deleted (as in the command tag).
    pub rows: u64,
    /// The written rows in the target's columns, when asked.
    pub returned: Vec<RecordBatch>,
    /// Written rows whose final state fails the check (the engine refuses the
    /// statement and rolls it back when there are any).
    pub violations: u64,
}

/// A savepoint command inside an origin transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Savepoint {
    /// `SAVEPOINT name`.
    Set,
    /// `RELEASE SAVEPOINT name`.
    Release,
    /// `ROLLBACK TO SAVEPOINT name`.
    RollbackTo,
}

/// What claiming a queued sync entry found at the origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Not applied before: it is recorded in this transaction, which commits it
    /// with the entry's changes (the origin's id of the transaction, if known).
    Fresh {
        /// The origin's transaction id (how its change feed names it).
        transaction: Option<String>,
    },
    /// Applied by an earlier transaction that committed.
    Done {
        /// That transaction's id, if known.
        transaction: Option<String>,
    },
}

/// An origin that takes writes.
#[async_trait]
pub trait Writes: std::fmt::Debug + Send + Sync {
    /// Opens a transaction at the origin.
    async fn begin(&self) -> Result<Box<dyn WriteTransaction>>;

    /// Opens a transaction and [claims](WriteTransaction::claim) the sync entry
    /// `entry` in it: a replay's first step, which an origin may do in one round
    /// trip.
    async fn begin_claimed(&self, entry: &str) -> Result<(Box<dyn WriteTransaction>, Claim)> {
        claimed(self.begin().await?, entry).await
    }
}

/// `t` with the sync entry `entry` claimed in it; rolled back if the claim fails.
pub async fn claimed(
    mut t: Box<dyn WriteTransaction>,
    entry: &str,
) -> Result<(Box<dyn WriteTransaction>, Claim)> {
    match t.claim(entry).await {
        Ok(c) => Ok((t, c)),
        Err(e) => {
            let _ = t.rollback().await;
            Err(e)
        }
    }
}

/// A transaction open at one origin. Dropped without `commit` or `rollback` (the
/// client went away), it is rolled back at the origin.
#[async_trait]
pub trait WriteTransaction: Send + Sync {
    /// The origin's name.
    fn origin(&self) -> &str;

    /// Runs one write in the transaction.
    async fn write(&mut self, request: WriteRequest<'_>) -> Result<Written>;

    /// A savepoint command.
    async fn savepoint(&mut self, op: Savepoint, name: &str) -> Result<()>;

    /// `dataset` (whose columns are `schema`) read inside this transaction, so that
    /// a block's reads see its own writes; `None` where the origin cannot.
    fn table(&self, dataset: &Dataset, schema: SchemaRef)
        -> Result<Option<Arc<dyn TableProvider>>>;

    /// The rows of `dataset` (columns `schema`) that `filter` keeps, locked until
    /// the transaction ends: what a sync replay compares a queued change with.
    async fn lock_rows(
        &mut self,
        dataset: &Dataset,
        schema: &SchemaRef,
        filter: &Expr,
    ) -> Result<Vec<RecordBatch>> {
        let _ = (schema, filter);
        Err(crate::ConnectorError::NotWritable {
            origin: self.origin().to_string(),
            dataset: dataset.qualified_name(),
            why: "this origin cannot lock rows for a sync replay".into(),
        })
    }

    /// Records the sync entry `entry` as applied, in this transaction, unless an
    /// earlier one did: replay after a crash at any point applies it exactly once.
    async fn claim(&mut self, entry: &str) -> Result<Claim> {
        Err(crate::ConnectorError::NotWritable {
            origin: self.origin().to_string(),
            dataset: entry.to_string(),
            why: "this origin cannot take sync replays".into(),
        })
    }

    /// Commits.
    async fn commit(self: Box<Self>) -> Result<()>;

    /// Commits, then opens the next transaction and claims the sync entry `next`
    /// in it, where the origin can do both in one round trip (`None`: only
    /// committed; the caller begins the next itself). An error leaves it unknown
    /// whether this transaction committed: a replay then claims its entry again,
    /// and the claim tells.
    async fn commit_then_claim(
        self: Box<Self>,
        next: &str,
    ) -> Result<Option<(Box<dyn WriteTransaction>, Claim)>> {
        let _ = next;
        self.commit().await.map(|()| None)
    }

    /// Rolls back.
    async fn rollback(self: Box<Self>) -> Result<()>;
}

/// An origin's write capability, shared.
pub type SharedWrites = Arc<dyn Writes>;
