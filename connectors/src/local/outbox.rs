//! The sync outbox: writes to `mode: sync` datasets wait here for their origin.
//!
//! A client's transaction changes the local copy and, in the same SQLite
//! transaction (`synchronous = FULL`), appends one **entry** (its id orders the
//! entries as they committed) with one **op** per statement and dataset: the rows
//! before and after, as Arrow IPC, and the keys they touch (so the change feed
//! can hold back origin changes to rows that still have queued changes). The
//! replayer takes the oldest pending entry of an origin, applies it there as one
//! transaction, and [`Outbox::finish`]es it: the entry's outcome, the local copy's
//! rows settled to what the origin now holds, and its conflicts, in one local
//! transaction. Conflicts are written *before* the origin commits, as tentative
//! rows that a later attempt replaces, so a crash between the origin's commit and
//! `finish` keeps the record of what that commit did.

use std::io::Cursor;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use rusqlite::OptionalExtension;

use super::codec::Encoded;
use super::copies::{arrow_error, copy_info, store_error, CopyInfo, CATALOG};
use super::LocalStore;
use crate::sql::quote_ident;
use crate::{ConnectorError, Result};

/// Entries: one per local transaction that wrote sync datasets.
pub(crate) const OUTBOX: &str = "_switchyard_outbox";
/// Ops: one per statement and dataset of an entry.
pub(crate) const OPS: &str = "_switchyard_outbox_ops";
/// The keys each entry touches, per dataset.
pub(crate) const KEYS: &str = "_switchyard_outbox_keys";
/// Conflicts and refusals, kept for admins (`switchyard.conflicts`).
pub(crate) const CONFLICTS: &str = "_switchyard_conflicts";
const META: &str = "_switchyard_meta";

/// Creates the outbox's tables when missing.
pub(crate) fn ensure(conn: &rusqlite::Connection) -> Result<()> {
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {OUTBOX} (
            entry INTEGER PRIMARY KEY AUTOINCREMENT,
            origin TEXT NOT NULL,
            created_at TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            origin_transaction TEXT,
            done_at TEXT
        );
        CREATE INDEX IF NOT EXISTS {OUTBOX}_status ON {OUTBOX} (status, origin, entry);
        CREATE INDEX IF NOT EXISTS {OUTBOX}_transaction ON {OUTBOX} (origin_transaction);
        CREATE TABLE IF NOT EXISTS {OPS} (
            entry INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            dataset TEXT NOT NULL,
            op TEXT NOT NULL,
            columns TEXT NOT NULL,
            old BLOB,
            new BLOB,
            PRIMARY KEY (entry, seq)
        );
        -- Covers the status's join (without it each look reads the rows' images).
        CREATE INDEX IF NOT EXISTS {OPS}_dataset ON {OPS} (entry, dataset);
        CREATE TABLE IF NOT EXISTS {KEYS} (
            entry INTEGER NOT NULL,
            dataset TEXT NOT NULL,
            key TEXT NOT NULL
        );
        CREATE INDEX IF NOT EXISTS {KEYS}_key ON {KEYS} (dataset, key);
        CREATE INDEX IF NOT EXISTS {KEYS}_entry ON {KEYS} (entry);
        CREATE TABLE IF NOT EXISTS {CONFLICTS} (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            entry INTEGER NOT NULL,
            dataset TEXT NOT NULL,
            kind TEXT NOT NULL,
            policy TEXT NOT NULL,
            outcome TEXT NOT NULL,
            key TEXT,
            local_row TEXT,
            origin_row TEXT,
            sqlstate TEXT,
            message TEXT,
            at TEXT NOT NULL,
            confirmed INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX IF NOT EXISTS {CONFLICTS}_entry ON {CONFLICTS} (entry);
        CREATE TABLE IF NOT EXISTS {META} (name TEXT PRIMARY KEY, value TEXT NOT NULL);"
    ))
    .map_err(store_error)
}

/// What a queued statement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// Rows inserted.
    Insert,
    /// Rows updated.
    Update,
    /// Rows deleted.
    Delete,
}

impl OpKind {
    fn code(self) -> &'static str {
        match self {
            OpKind::Insert => "I",
            OpKind::Update => "U",
            OpKind::Delete => "D",
        }
    }

    fn of(code: &str) -> Option<OpKind> {
        Some(match code {
            "I" => OpKind::Insert,
            "U" => OpKind::Update,
            "D" => OpKind::Delete,
            _ => return None,
        })
    }
}

/// One statement's changes to one sync dataset, queued.
#[derive(Debug, Clone)]
pub struct QueuedOp {
    /// `schema.name`.
    pub dataset: String,
    /// Insert, update or delete.
    pub kind: OpKind,
    /// Inserts: the columns the statement named (the others take the origin's
    /// defaults there).
    pub columns: Vec<String>,
    /// Updates and deletes: the rows as they were (the copy's columns).
    pub old: Option<RecordBatch>,
    /// Inserts and updates: the rows as they are now, in `old`'s row order.
    pub new: Option<RecordBatch>,
}

/// A local transaction's changes waiting for their origin.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its place in the queue.
    pub id: i64,
    /// The id the origin records it by (unique to this store).
    pub claim: String,
    /// When it committed locally (RFC 3339).
    pub created_at: String,
    /// Replays tried so far.
    pub attempts: i64,
    /// Its statements, in order.
    pub ops: Vec<QueuedOp>,
}

/// How a replayed entry ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Applied at the origin (perhaps with resolved conflicts).
    Applied,
    /// Set aside by the `reject` policy: nothing of it reached the origin.
    Rejected,
    /// The origin refused it (a constraint, a privilege): nothing of it stayed there.
    Refused,
}

impl Outcome {
    fn status(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Rejected => "rejected",
            Outcome::Refused => "refused",
        }
    }
}

/// A replayed entry, to be [`Outbox::finish_all`]ed.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The entry.
    pub entry: i64,
    /// How it ended.
    pub outcome: Outcome,
    /// The origin's id of the transaction that applied it.
    pub transaction: Option<String>,
    /// The local copies' rows to make the origin's.
    pub settle: Vec<Settle>,
    /// Conflicts to record.
    pub conflicts: Vec<ConflictRecord>,
}

/// A local copy's row made equal to the origin's: `row` is the origin's row of
/// `key` (the copy's key columns, one row), or `None` where the origin has none.
#[derive(Debug, Clone)]
pub struct Settle {
    /// `schema.name`.
    pub dataset: String,
    /// The key's values.
    pub key: RecordBatch,
    /// The origin's row, in (a subset of) the copy's columns.
    pub row: Option<RecordBatch>,
}

/// A conflict (or refusal) as `switchyard.conflicts` shows it.
#[derive(Debug, Clone, Default)]
pub struct ConflictRecord {
    /// The entry.
    pub entry: i64,
    /// `schema.name`.
    pub dataset: String,
    /// PostgreSQL 18's conflict names (`insert_exists`, `update_origin_differs`,
    /// `update_missing`, `delete_origin_differs`, `delete_missing`), or
    /// `origin_refused`.
    pub kind: String,
    /// The dataset's policy.
    pub policy: String,
    /// What became of the change: `origin_kept`, `local_applied`, `set_aside`,
    /// `nothing_to_do`.
    pub outcome: String,
    /// The row's key (JSON).
    pub key: Option<String>,
    /// The local version (JSON): the queued row, or the row before a delete.
    pub local_row: Option<String>,
    /// The origin's version (JSON), `None` where it had no row.
    pub origin_row: Option<String>,
    /// The origin's SQLSTATE, for refusals.
    pub sqlstate: Option<String>,
    /// The origin's message, for refusals.
    pub message: Option<String>,
    /// When (RFC 3339).
    pub at: String,
}

/// One sync dataset's queue, for `switchyard.sync_queue`.
#[derive(Debug, Clone, Default)]
pub struct QueueStatus {
    /// `schema.name`.
    pub dataset: String,
    /// Entries waiting.
    pub pending: u64,
    /// When the oldest waiting entry committed locally.
    pub oldest_pending: Option<String>,
    /// The last replay error of a waiting entry.
    pub last_error: Option<String>,
    /// Entries applied at the origin.
    pub applied: u64,
    /// Entries set aside or refused.
    pub set_aside: u64,
}

/// A row's key as text: the key columns' values, as Arrow displays them, in a
/// JSON array. Queued keys and change-feed keys are compared in this form.
pub fn key_text(batch: &RecordBatch, key: &[usize], row: usize) -> Result<String> {
    let values = key
        .iter()
        .map(|&k| value_json(batch.column(k), row))
        .collect::<Result<Vec<_>>>()?;
    Ok(serde_json::Value::Array(values).to_string())
}

fn value_json(column: &ArrayRef, row: usize) -> Result<serde_json::Value> {
    if column.is_null(row) {
        return Ok(serde_json::Value::Null);
    }
    let f =
        ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default()).map_err(arrow_error)?;
    Ok(serde_json::Value::String(f.value(row).to_string()))
}

/// A row as a JSON object of display values (for `switchyard.conflicts`).
pub fn row_json(batch: &RecordBatch, row: usize) -> Result<String> {
    let mut object = serde_json::Map::new();
    for (i, field) in batch.schema().fields().iter().enumerate() {
        object.insert(field.name().clone(), value_json(batch.column(i), row)?);
    }
    Ok(serde_json::Value::Object(object).to_string())
}

/// Rows as bytes (one Arrow IPC stream).
pub(crate) fn batch_bytes(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut w = StreamWriter::try_new(&mut out, &batch.schema()).map_err(arrow_error)?;
    w.write(batch).map_err(arrow_error)?;
    w.finish().map_err(arrow_error)?;
    drop(w);
    Ok(out)
}

fn batch_from_bytes(bytes: &[u8]) -> Result<RecordBatch> {
    let reader = StreamReader::try_new(Cursor::new(bytes), None).map_err(arrow_error)?;
    let schema = reader.schema();
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(arrow_error)?;
    datafusion::arrow::compute::concat_batches(&schema, &batches).map_err(arrow_error)
}

/// Appends an op to the open entry, with the keys it touches.
pub(crate) fn queue_op(
    conn: &rusqlite::Connection,
    entry: i64,
    op: &QueuedOp,
    key: &[String],
) -> Result<()> {
    let seq: i64 = conn
        .query_row(
            &format!("SELECT coalesce(max(seq), 0) + 1 FROM {OPS} WHERE entry = ?1"),
            [entry],
            |r| r.get(0),
        )
        .map_err(store_error)?;
    let old = op.old.as_ref().map(batch_bytes).transpose()?;
    let new = op.new.as_ref().map(batch_bytes).transpose()?;
    conn.execute(
        &format!(
            "INSERT INTO {OPS} (entry, seq, dataset, op, columns, old, new) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
        ),
        rusqlite::params![
            entry,
            seq,
            op.dataset,
            op.kind.code(),
            serde_json::to_string(&op.columns).unwrap_or_default(),
            old,
            new
        ],
    )
    .map_err(store_error)?;
    let mut keys = std::collections::BTreeSet::new();
    for batch in op.old.iter().chain(op.new.iter()) {
        let idx = key
            .iter()
            .map(|k| batch.schema().index_of(k).map_err(arrow_error))
            .collect::<Result<Vec<_>>>()?;
        for row in 0..batch.num_rows() {
            keys.insert(key_text(batch, &idx, row)?);
        }
    }
    let mut insert = conn
        .prepare_cached(&format!(
            "INSERT INTO {KEYS} (entry, dataset, key) VALUES (?1, ?2, ?3)"
        ))
        .map_err(store_error)?;
    for k in keys {
        insert
            .execute(rusqlite::params![entry, op.dataset, k])
            .map_err(store_error)?;
    }
    Ok(())
}

/// Whether `key` of `dataset` has changes waiting in an entry other than `except`.
pub(crate) fn pending_key(
    conn: &rusqlite::Connection,
    dataset: &str,
    key: &str,
    except: Option<i64>,
) -> Result<bool> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT EXISTS (SELECT 1 FROM {KEYS} k JOIN {OUTBOX} e ON e.entry = k.entry
              WHERE k.dataset = ?1 AND k.key = ?2 AND e.status = 'pending' AND e.entry IS NOT ?3)"
        ))
        .map_err(store_error)?;
    stmt.query_row(rusqlite::params![dataset, key, except], |r| r.get(0))
        .map_err(store_error)
}

impl LocalStore {
    /// The outbox of this store's sync datasets.
    pub fn outbox(&self) -> Result<Outbox> {
        let conn = self.writer()?;
        Self::ensure_catalog(&conn)?;
        ensure(&conn)?;
        let id: Option<String> = conn
            .query_row(
                &format!("SELECT value FROM {META} WHERE name = 'store_id'"),
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(store_error)?;
        let store_id = match id {
            Some(id) => id,
            None => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default();
                let id = format!("{nanos:x}{:x}", std::process::id());
                conn.execute(
                    &format!("INSERT OR IGNORE INTO {META} (name, value) VALUES ('store_id', ?1)"),
                    [&id],
                )
                .map_err(store_error)?;
                conn.query_row(
                    &format!("SELECT value FROM {META} WHERE name = 'store_id'"),
                    [],
                    |r| r.get(0),
                )
                .map_err(store_error)?
            }
        };
        Ok(Outbox {
            store: self.clone(),
            store_id,
            conn: Arc::default(),
        })
    }
}

/// The replayer's view of the outbox (blocking calls: run them off the async
/// threads).
#[derive(Debug, Clone)]
pub struct Outbox {
    store: LocalStore,
    store_id: String,
    /// One connection, opened on first use and kept (its statements cached):
    /// the replayer reads and writes the outbox once per entry or run.
    conn: Arc<std::sync::Mutex<Option<rusqlite::Connection>>>,
}

impl Outbox {
    /// Runs `f` on the outbox's connection.
    fn with<T>(&self, f: impl FnOnce(&mut rusqlite::Connection) -> Result<T>) -> Result<T> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            let conn = self.store.writer()?;
            // What the replayer records follows what the origin committed: it
            // must survive the machine going down, as the origin's commit does.
            conn.pragma_update(None, "synchronous", "FULL")
                .map_err(store_error)?;
            *guard = Some(conn);
        }
        f(guard.as_mut().expect("opened above"))
    }

    /// The oldest `limit` entries of `origin` still waiting after `after`, in
    /// queue order (entries replayed but not yet [`finish`](Self::finish)ed are
    /// skipped this way).
    pub fn pending(&self, origin: &str, after: i64, limit: usize) -> Result<Vec<Entry>> {
        self.with(|conn| {
            let heads: Vec<(i64, String, i64)> = {
                let mut stmt = conn
                    .prepare_cached(&format!(
                        "SELECT entry, created_at, attempts FROM {OUTBOX}
                          WHERE status = 'pending' AND origin = ?1 AND entry > ?2 ORDER BY entry LIMIT ?3"
                    ))
                    .map_err(store_error)?;
                let rows = stmt
                    .query_map(rusqlite::params![origin, after, limit as i64], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .map_err(store_error)?;
                rows.collect::<std::result::Result<_, _>>()
                    .map_err(store_error)?
            };
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT dataset, op, columns, old, new FROM {OPS} WHERE entry = ?1 ORDER BY seq"
                ))
                .map_err(store_error)?;
            let mut out = Vec::with_capacity(heads.len());
            for (id, created_at, attempts) in heads {
                let rows = stmt
                    .query_map([id], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, Option<Vec<u8>>>(3)?,
                            r.get::<_, Option<Vec<u8>>>(4)?,
                        ))
                    })
                    .map_err(store_error)?;
                let mut ops = Vec::new();
                for row in rows {
                    let (dataset, op, columns, old, new) = row.map_err(store_error)?;
                    let kind = OpKind::of(&op).ok_or_else(|| ConnectorError::LocalStore {
                        full: false,
                        message: format!("outbox entry {id}: unknown op {op:?}"),
                    })?;
                    ops.push(QueuedOp {
                        dataset,
                        kind,
                        columns: serde_json::from_str(&columns).unwrap_or_default(),
                        old: old.as_deref().map(batch_from_bytes).transpose()?,
                        new: new.as_deref().map(batch_from_bytes).transpose()?,
                    });
                }
                out.push(Entry {
                    id,
                    claim: format!("{}:{id}", self.store_id),
                    created_at,
                    attempts,
                    ops,
                });
            }
            Ok(out)
        })
    }

    /// A replay of `entry` failed for a reason that may pass (the origin is down):
    /// it stays first in the queue.
    pub fn failed(&self, entry: i64, error: &str) -> Result<()> {
        self.with(|conn| {
            conn.execute(
                &format!(
                    "UPDATE {OUTBOX} SET attempts = attempts + 1, last_error = ?1 WHERE entry = ?2"
                ),
                rusqlite::params![error, entry],
            )
            .map_err(store_error)?;
            Ok(())
        })
    }

    /// Before `entry`'s origin transaction commits: replaces its tentative
    /// conflicts, and records the origin's id of the transaction, so that the
    /// change feed recognises it however soon it sends it back.
    pub fn tentative(
        &self,
        entry: i64,
        conflicts: &[ConflictRecord],
        transaction: Option<&str>,
    ) -> Result<()> {
        // No fsync: lost with the machine (not with the process), these only
        // cost the record of what a commit that crashed on its way did.
        let mut conn = self.store.writer()?;
        let tx = conn.transaction().map_err(store_error)?;
        tx.execute(
            &format!("UPDATE {OUTBOX} SET origin_transaction = ?1 WHERE entry = ?2"),
            rusqlite::params![transaction, entry],
        )
        .map_err(store_error)?;
        tx.execute(
            &format!("DELETE FROM {CONFLICTS} WHERE entry = ?1 AND confirmed = 0"),
            [entry],
        )
        .map_err(store_error)?;
        insert_conflicts(&tx, conflicts, false)?;
        tx.commit().map_err(store_error)
    }

    /// Ends `entry`: its outcome and origin transaction, the local copies' rows
    /// settled to the origin's (rows with later queued changes are left to those),
    /// its tentative conflicts confirmed and `conflicts` added, in one transaction.
    pub fn finish(
        &self,
        entry: i64,
        outcome: Outcome,
        transaction: Option<&str>,
        settle: &[Settle],
        conflicts: &[ConflictRecord],
    ) -> Result<()> {
        self.finish_all(&[Finished {
            entry,
            outcome,
            transaction: transaction.map(str::to_string),
            settle: settle.to_vec(),
            conflicts: conflicts.to_vec(),
        }])
    }

    /// [`finish`](Self::finish) for several entries, in their order, in one
    /// durable transaction (one fsync for a run of replayed entries).
    pub fn finish_all(&self, done: &[Finished]) -> Result<()> {
        self.with(|conn| {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(store_error)?;
        // Each copy's catalog row, read once for all the entries.
        let mut copies: std::collections::HashMap<String, Option<CopyInfo>> = Default::default();
        let run = |sql: &str, params: &[&dyn rusqlite::ToSql]| {
            tx.prepare_cached(sql)
                .and_then(|mut stmt| stmt.execute(params))
                .map_err(store_error)
        };
        for f in done {
            let entry = f.entry;
            run(
                &format!(
                    "UPDATE {OUTBOX} SET status = ?1, origin_transaction = coalesce(?2, origin_transaction),
                            done_at = ?3, last_error = NULL
                      WHERE entry = ?4"
                ),
                rusqlite::params![f.outcome.status(), f.transaction, now(), entry],
            )?;
            run(
                &format!("UPDATE {CONFLICTS} SET confirmed = 1 WHERE entry = ?1"),
                rusqlite::params![entry],
            )?;
            insert_conflicts(&tx, &f.conflicts, true)?;
            for s in &f.settle {
                if !copies.contains_key(&s.dataset) {
                    copies.insert(s.dataset.clone(), copy_info(&tx, &s.dataset)?);
                }
                if let Some(info) = &copies[&s.dataset] {
                    settle_row(&tx, info, s, entry)?;
                }
            }
            // The ops are the queue's; once done, only their record stays.
            run(
                &format!("DELETE FROM {KEYS} WHERE entry = ?1"),
                rusqlite::params![entry],
            )?;
            if f.outcome == Outcome::Applied {
                run(
                    &format!("DELETE FROM {OPS} WHERE entry = ?1"),
                    rusqlite::params![entry],
                )?;
            }
        }
        tx.commit().map_err(store_error)
        })
    }

    /// Each dataset's queue (datasets that never queued anything are absent).
    pub fn queues(&self) -> Result<Vec<QueueStatus>> {
        self.with(|conn| {
            let mut out: std::collections::BTreeMap<String, QueueStatus> = Default::default();
            // Pending entries only, by the status index: the applied ones stay
            // as a record and would make this grow with the queue's history.
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT o.dataset, count(DISTINCT e.entry), min(e.created_at), max(e.last_error)
                       FROM {OUTBOX} e JOIN {OPS} o ON o.entry = e.entry
                      WHERE e.status = 'pending'
                      GROUP BY o.dataset"
                ))
                .map_err(store_error)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, Option<String>>(3)?,
                    ))
                })
                .map_err(store_error)?;
            for row in rows {
                let (dataset, pending, oldest, error) = row.map_err(store_error)?;
                let q = out.entry(dataset.clone()).or_default();
                q.dataset = dataset;
                q.pending = pending as u64;
                q.oldest_pending = oldest;
                q.last_error = error;
            }
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT o.dataset, count(DISTINCT e.entry)
                       FROM {OUTBOX} e JOIN {OPS} o ON o.entry = e.entry
                      WHERE e.status IN ('rejected', 'refused')
                      GROUP BY o.dataset"
                ))
                .map_err(store_error)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(store_error)?;
            for row in rows {
                let (dataset, set_aside) = row.map_err(store_error)?;
                let q = out.entry(dataset.clone()).or_default();
                q.dataset = dataset;
                q.set_aside = set_aside as u64;
            }
            Ok(out.into_values().collect())
        })
    }

    /// Entries applied at `origin` (for the status).
    pub fn applied(&self, origin: &str) -> Result<u64> {
        self.with(|conn| {
            conn.query_row(
                &format!("SELECT count(*) FROM {OUTBOX} WHERE origin = ?1 AND status = 'applied'"),
                [origin],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(store_error)
        })
    }

    /// Every recorded conflict, oldest first (confirmed ones, and tentative ones
    /// whose entry is still waiting).
    pub fn conflicts(&self) -> Result<Vec<ConflictRecord>> {
        self.with(|conn| {
        let mut stmt = conn
            .prepare(&format!(
                "SELECT entry, dataset, kind, policy, outcome, key, local_row, origin_row, sqlstate, message, at
                   FROM {CONFLICTS} WHERE confirmed = 1 ORDER BY id"
            ))
            .map_err(store_error)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(ConflictRecord {
                    entry: r.get(0)?,
                    dataset: r.get(1)?,
                    kind: r.get(2)?,
                    policy: r.get(3)?,
                    outcome: r.get(4)?,
                    key: r.get(5)?,
                    local_row: r.get(6)?,
                    origin_row: r.get(7)?,
                    sqlstate: r.get(8)?,
                    message: r.get(9)?,
                    at: r.get(10)?,
                })
            })
            .map_err(store_error)?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(store_error)
        })
    }
}

fn insert_conflicts(
    conn: &rusqlite::Connection,
    conflicts: &[ConflictRecord],
    confirmed: bool,
) -> Result<()> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "INSERT INTO {CONFLICTS} (entry, dataset, kind, policy, outcome, key, local_row, origin_row, sqlstate, message, at, confirmed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
        ))
        .map_err(store_error)?;
    for c in conflicts {
        stmt.execute(rusqlite::params![
            c.entry,
            c.dataset,
            c.kind,
            c.policy,
            c.outcome,
            c.key,
            c.local_row,
            c.origin_row,
            c.sqlstate,
            c.message,
            if c.at.is_empty() { now() } else { c.at.clone() },
            confirmed as i64
        ])
        .map_err(store_error)?;
    }
    Ok(())
}

/// Makes the copy's row of `s.key` the origin's, unless a later entry still has
/// changes to it (its replay settles it).
fn settle_row(conn: &rusqlite::Connection, info: &CopyInfo, s: &Settle, entry: i64) -> Result<()> {
    let all: Vec<usize> = (0..s.key.num_columns()).collect();
    let text = key_text(&s.key, &all, 0)?;
    if pending_key(conn, &s.dataset, &text, Some(entry))? {
        return Ok(());
    }
    let table = quote_ident(&info.table);
    let key_values = s
        .key
        .columns()
        .iter()
        .map(Encoded::new)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(arrow_error)?;
    let condition = s
        .key
        .schema()
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| format!("{} IS ?{}", quote_ident(f.name()), i + 1))
        .collect::<Vec<_>>()
        .join(" AND ");
    let rowid: Option<i64> = {
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT rowid FROM {table} WHERE {condition} LIMIT 1"
            ))
            .map_err(store_error)?;
        for (i, v) in key_values.iter().enumerate() {
            stmt.raw_bind_parameter(i + 1, v.value(0).map_err(arrow_error)?)
                .map_err(store_error)?;
        }
        let mut rows = stmt.raw_query();
        match rows.next().map_err(store_error)? {
            Some(r) => Some(r.get(0).map_err(store_error)?),
            None => None,
        }
    };
    let delta: i64 = match (&s.row, rowid) {
        (None, None) => 0,
        (None, Some(rowid)) => {
            conn.execute(&format!("DELETE FROM {table} WHERE rowid = ?1"), [rowid])
                .map_err(store_error)?;
            -1
        }
        (Some(row), rowid) => {
            let row = in_copy_columns(row, &info.schema)?;
            let ids = rowid.map(|id| vec![id]);
            super::sync_write::put_rows(conn, info, &row, ids.as_deref(), false)?;
            if rowid.is_some() {
                0
            } else {
                1
            }
        }
    };
    if delta != 0 {
        conn.execute(
            &format!("UPDATE {CATALOG} SET rows = rows + ?1 WHERE dataset = ?2"),
            rusqlite::params![delta, s.dataset],
        )
        .map_err(store_error)?;
    }
    Ok(())
}

/// `batch` in the copy's columns (by name; columns it lacks are NULL), each cast
/// to the copy's type.
pub(crate) fn in_copy_columns(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.schema().index_of(f.name()) {
            Ok(i) => {
                let c = batch.column(i);
                if c.data_type() == f.data_type() {
                    Ok(Arc::clone(c))
                } else {
                    datafusion::arrow::compute::cast(c, f.data_type()).map_err(arrow_error)
                }
            }
            Err(_) => Ok(datafusion::arrow::array::new_null_array(
                f.data_type(),
                batch.num_rows(),
            )),
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    let nullable = Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| {
                Field::new(f.name(), f.data_type().clone(), true)
                    .with_metadata(f.metadata().clone())
            })
            .collect::<Vec<_>>(),
    ));
    RecordBatch::try_new(nullable, columns).map_err(arrow_error)
}

/// Now as RFC 3339 in UTC, to the microsecond.
pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
