//! Applying a change feed to a live copy: each origin transaction becomes one
//! local transaction that also stores the feed's position, so a reader sees
//! whole origin transactions only, and after a crash the copy and its position
//! agree (nothing applied twice, nothing skipped).
//!
//! Rows are found by the copy's key columns (indexed); `IS` compares them, so a
//! replica-identity-full table with NULLs still finds its row, and one row of
//! several equal ones is changed, as the origin changed one.

use std::sync::Arc;

use datafusion::arrow::datatypes::{FieldRef, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use rusqlite::types::ToSqlOutput;

use super::codec::{schema_bytes, Codec, Encoded};
use super::copies::{arrow_error, copy_info, store_error, CATALOG};
use super::LocalStore;
use crate::changes::{Change, ChangeBatch};
use crate::sql::quote_ident;
use crate::{ConnectorError, Result};

/// Applies changes to one live copy; open on a blocking thread.
pub struct Applier {
    conn: rusqlite::Connection,
    dataset: String,
    table: String,
    schema: SchemaRef,
    /// Copy columns of the key.
    key: Vec<usize>,
    /// Rows in the copy, as the catalog says.
    rows: i64,
    open: bool,
    /// A sync dataset's copy: origin changes to rows with queued local changes
    /// wait for the replay (which settles those rows), and inserts of rows the
    /// copy holds (our own replayed inserts coming back) update them.
    sync: bool,
    /// Origin transactions of ours (replayed sync entries) seen on the feed.
    own: u64,
    /// Origin changes held back for rows with queued local changes.
    held: u64,
    store: LocalStore,
}

impl std::fmt::Debug for Applier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier")
            .field("dataset", &self.dataset)
            .field("table", &self.table)
            .finish()
    }
}

impl LocalStore {
    /// An applier for `dataset`'s live copy.
    pub fn applier(&self, dataset: &str) -> Result<Applier> {
        let conn = self.writer()?;
        // A committed change must survive a crash of the machine, not only of
        // the process: the origin forgets what it was told is durable.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(store_error)?;
        let info = copy_info(&conn, dataset)?.ok_or_else(|| ConnectorError::NotMaterialized {
            dataset: dataset.to_string(),
            why: "no copy to apply changes to".into(),
        })?;
        let key = info
            .key
            .iter()
            .map(|k| {
                info.schema
                    .index_of(k)
                    .map_err(|_| ConnectorError::Resnapshot {
                        dataset: dataset.to_string(),
                        why: format!("key column {k} is not in the copy"),
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        if key.is_empty() {
            return Err(ConnectorError::Resnapshot {
                dataset: dataset.to_string(),
                why: "the copy was not taken for a change feed".into(),
            });
        }
        Ok(Applier {
            conn,
            dataset: dataset.to_string(),
            table: info.table,
            schema: info.schema,
            key,
            rows: info.rows as i64,
            open: false,
            sync: false,
            own: 0,
            held: 0,
            store: self.clone(),
        })
    }
}

impl Applier {
    /// The copy's schema (grows with added columns).
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Rows in the copy.
    pub fn rows(&self) -> u64 {
        self.rows.max(0) as u64
    }

    /// Makes this the applier of a sync dataset's copy (see the `sync` field).
    pub fn for_sync(&mut self) -> Result<()> {
        super::outbox::ensure(&self.conn)?;
        self.sync = true;
        Ok(())
    }

    /// Origin transactions recognised as our own replays, and origin changes held
    /// back for rows with queued changes, so far.
    pub fn sync_counts(&self) -> (u64, u64) {
        (self.own, self.held)
    }

    /// Notes the origin's id of the transaction about to be applied: a sync
    /// dataset recognises its own replayed entries coming back. They are applied
    /// like any change (idempotently: the copy holds them already, and a feed
    /// running behind brings older origin changes first), but not counted as
    /// remote ones.
    pub fn origin_transaction(&mut self, transaction: Option<&str>) -> Result<bool> {
        let (true, Some(t)) = (self.sync, transaction) else {
            return Ok(false);
        };
        let own: bool = self.store.is_replaying(t)
            || self
                .conn
                .query_row(
                    &format!(
                        "SELECT EXISTS (SELECT 1 FROM {} WHERE origin_transaction = ?1)",
                        super::outbox::OUTBOX
                    ),
                    [t],
                    |r| r.get(0),
                )
                .map_err(store_error)?;
        if own {
            self.own += 1;
            tracing::debug!(dataset = %self.dataset, transaction = t, "our own replayed transaction came back on the feed");
        }
        Ok(own)
    }

    /// Whether the row at `row` has queued local changes (sync copies only).
    fn queued(&self, batch: &RecordBatch, row: usize) -> Result<bool> {
        if !self.sync {
            return Ok(false);
        }
        let key = super::outbox::key_text(batch, &self.key, row)?;
        super::outbox::pending_key(&self.conn, &self.dataset, &key, None)
    }

    /// Opens the local transaction of an origin transaction.
    pub fn begin(&mut self) -> Result<()> {
        if !self.open {
            self.conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(store_error)?;
            self.open = true;
        }
        Ok(())
    }

    /// Abandons the open transaction (nothing of it stays).
    pub fn rollback(&mut self) {
        if std::mem::take(&mut self.open) {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    fn key_condition(&self) -> String {
        self.key
            .iter()
            .enumerate()
            .map(|(i, &k)| format!("{} IS ?{}", quote_ident(self.schema.field(k).name()), i + 1))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// The rowid of the copy's row with the key of `row`, if there is one.
    fn find(&self, values: &[Encoded], row: usize) -> Result<Option<i64>> {
        let sql = format!(
            "SELECT rowid FROM {} WHERE {} LIMIT 1",
            quote_ident(&self.table),
            self.key_condition()
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(store_error)?;
        for (i, &k) in self.key.iter().enumerate() {
            stmt.raw_bind_parameter(i + 1, values[k].value(row).map_err(arrow_error)?)
                .map_err(store_error)?;
        }
        let mut rows = stmt.raw_query();
        match rows.next().map_err(store_error)? {
            Some(r) => Ok(Some(r.get(0).map_err(store_error)?)),
            None => Ok(None),
        }
    }

    fn insert(&mut self, values: &[Encoded], row: usize) -> Result<()> {
        let sql = format!(
            "INSERT INTO {} VALUES ({})",
            quote_ident(&self.table),
            (1..=self.schema.fields().len())
                .map(|i| format!("?{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(store_error)?;
        for (i, v) in values.iter().enumerate() {
            stmt.raw_bind_parameter(i + 1, v.value(row).map_err(arrow_error)?)
                .map_err(store_error)?;
        }
        stmt.raw_execute().map_err(store_error)?;
        self.rows += 1;
        Ok(())
    }

    fn update(
        &mut self,
        values: &[Encoded],
        rowid: i64,
        row: usize,
        unchanged: &[usize],
    ) -> Result<()> {
        let set: Vec<usize> = (0..self.schema.fields().len())
            .filter(|i| !unchanged.contains(i))
            .collect();
        let sql = format!(
            "UPDATE {} SET {} WHERE rowid = ?{}",
            quote_ident(&self.table),
            set.iter()
                .enumerate()
                .map(|(n, &i)| format!("{} = ?{}", quote_ident(self.schema.field(i).name()), n + 1))
                .collect::<Vec<_>>()
                .join(", "),
            set.len() + 1
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(store_error)?;
        for (n, &i) in set.iter().enumerate() {
            stmt.raw_bind_parameter(n + 1, values[i].value(row).map_err(arrow_error)?)
                .map_err(store_error)?;
        }
        stmt.raw_bind_parameter(set.len() + 1, ToSqlOutput::from(rowid))
            .map_err(store_error)?;
        stmt.raw_execute().map_err(store_error)?;
        Ok(())
    }

    fn delete(&mut self, rowid: i64) -> Result<()> {
        let sql = format!("DELETE FROM {} WHERE rowid = ?1", quote_ident(&self.table));
        let mut stmt = self.conn.prepare_cached(&sql).map_err(store_error)?;
        stmt.execute([rowid]).map_err(store_error)?;
        self.rows -= 1;
        Ok(())
    }

    /// Applies a batch of the open transaction.
    pub fn apply(&mut self, batch: &ChangeBatch) -> Result<()> {
        self.begin()?;
        if batch.rows.num_columns() != self.schema.fields().len() {
            return Err(ConnectorError::Resnapshot {
                dataset: self.dataset.clone(),
                why: format!(
                    "changes have {} columns, the copy {}",
                    batch.rows.num_columns(),
                    self.schema.fields().len()
                ),
            });
        }
        let values = batch
            .rows
            .columns()
            .iter()
            .map(Encoded::new)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(arrow_error)?;
        for change in &batch.changes {
            let rows_named: Vec<usize> = match change {
                Change::Insert { row } => vec![*row],
                Change::Update { old, new, .. } => old.iter().copied().chain([*new]).collect(),
                Change::Delete { old } => vec![*old],
                Change::Truncate => vec![],
            };
            let mut held = false;
            for r in rows_named {
                held |= self.queued(&batch.rows, r)?;
            }
            if held {
                self.held += 1;
                continue;
            }
            match change {
                Change::Insert { row } if self.sync => match self.find(&values, *row)? {
                    Some(rowid) => self.update(&values, rowid, *row, &[])?,
                    None => self.insert(&values, *row)?,
                },
                Change::Insert { row } => self.insert(&values, *row)?,
                Change::Update {
                    old,
                    new,
                    unchanged,
                    upsert,
                } => match self.find(&values, old.unwrap_or(*new))? {
                    Some(rowid) => self.update(&values, rowid, *new, unchanged)?,
                    None if unchanged.is_empty() => self.insert(&values, *new)?,
                    None if *upsert => {
                        return Err(ConnectorError::Resnapshot {
                            dataset: self.dataset.clone(),
                            why: "a row entered the dataset's filter without its large values (unchanged TOAST)".into(),
                        })
                    }
                    None => tracing::warn!(dataset = %self.dataset, "an update found no row in the copy"),
                },
                Change::Delete { old } => {
                    if let Some(rowid) = self.find(&values, *old)? {
                        self.delete(rowid)?;
                    }
                }
                Change::Truncate => {
                    self.conn
                        .execute_batch(&format!("DELETE FROM {}", quote_ident(&self.table)))
                        .map_err(store_error)?;
                    self.rows = 0;
                }
            }
        }
        Ok(())
    }

    /// Appends columns to the copy (NULL in its rows), in the open transaction.
    pub fn add_columns(&mut self, fields: &[FieldRef]) -> Result<()> {
        self.begin()?;
        for f in fields {
            self.conn
                .execute_batch(&format!(
                    "ALTER TABLE {} ADD COLUMN {} {}",
                    quote_ident(&self.table),
                    quote_ident(f.name()),
                    Codec::of(f.data_type()).sql_type()
                ))
                .map_err(store_error)?;
        }
        let mut all: Vec<FieldRef> = self.schema.fields().iter().cloned().collect();
        all.extend(fields.iter().cloned());
        self.schema = Arc::new(Schema::new_with_metadata(
            all,
            self.schema.metadata().clone(),
        ));
        let bytes = schema_bytes(&self.schema).map_err(arrow_error)?;
        self.conn
            .execute(
                &format!("UPDATE {CATALOG} SET arrow_schema = ?1 WHERE dataset = ?2"),
                rusqlite::params![bytes, self.dataset],
            )
            .map_err(store_error)?;
        Ok(())
    }

    /// Commits the open transaction with the feed's position after it.
    pub fn commit(&mut self, position: &str) -> Result<()> {
        self.stage(position)?;
        self.flush()
    }

    /// Records the feed's position after the transactions applied so far in the
    /// open local transaction, without committing it: several origin transactions
    /// that arrive together then share one durable commit ([`Self::flush`]).
    /// Readers still see whole origin transactions only.
    pub fn stage(&mut self, position: &str) -> Result<()> {
        self.begin()?;
        let staged = self
            .conn
            .execute(
                &format!("UPDATE {CATALOG} SET position = ?1, rows = ?2 WHERE dataset = ?3"),
                rusqlite::params![position, self.rows, self.dataset],
            )
            .map_err(store_error);
        if staged.is_err() {
            self.rollback();
        }
        staged.map(|_| ())
    }

    /// Commits the open transaction (durably: `synchronous = FULL`), if one is open.
    pub fn flush(&mut self) -> Result<()> {
        if !self.open {
            return Ok(());
        }
        let done = self.conn.execute_batch("COMMIT").map_err(store_error);
        if done.is_err() {
            self.rollback();
        }
        self.open = false;
        done
    }
}

impl Drop for Applier {
    fn drop(&mut self) {
        self.rollback();
    }
}
