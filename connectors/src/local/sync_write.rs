//! Writes to `mode: sync` datasets: a client's statement changes the dataset's
//! local copy and queues what it did in the [`outbox`](super::outbox), in one
//! SQLite transaction that commits durably (`synchronous = FULL`) whether or not
//! the origin is reachable. The replayer brings the queue to the origin later.
//!
//! Each statement is computed in Arrow: the rows an UPDATE or DELETE touches are
//! read on the transaction's own connection (filters SQLite evaluates exactly go
//! into the query, DataFusion evaluates the whole filter), new values are the
//! assignments evaluated by DataFusion, and rows are written back by the copy's
//! key in the copy's own encoding. The key is unique in a sync copy, so an INSERT
//! of a key the copy holds fails with 23505 as the origin would.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::common::Column;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{cast, Expr};
use datafusion::prelude::SessionContext;
use rusqlite::types::ToSqlOutput;
use switchyard_config::Dataset;
use switchyard_sqlstate::SqlState;

use super::codec::{Decoder, Encoded};
use super::copies::{arrow_error, copy_info, store_error, CopyInfo, CATALOG};
use super::outbox::{self, in_copy_columns, OpKind, QueuedOp, OPS, OUTBOX};
use super::LocalStore;
use crate::sql::quote_ident;
use crate::sqlite::write::blocking;
use crate::write::{
    ConflictAction, ConflictTarget, Savepoint, Write, WriteRequest, WriteTransaction, Writes,
    Written,
};
use crate::{ConnectorError, Result};

/// The rowid column of rows read for a write.
const ROWID: &str = "_switchyard_rowid";

/// The name a block's transaction knows sync writes to `origin`'s datasets by:
/// they are local, so a block cannot mix them with writes at the origin itself.
pub fn sync_origin(origin: &str) -> String {
    format!("{origin} (sync)")
}

/// Writes to the sync datasets of one origin.
#[derive(Debug)]
pub struct SyncWrites {
    store: LocalStore,
    origin: String,
}

impl LocalStore {
    /// Writes to the local copies of `origin`'s sync datasets.
    pub fn sync_writes(&self, origin: &str) -> SyncWrites {
        SyncWrites {
            store: self.clone(),
            origin: origin.to_string(),
        }
    }
}

type Conn = Arc<Mutex<Option<rusqlite::Connection>>>;

#[async_trait]
impl Writes for SyncWrites {
    async fn begin(&self) -> Result<Box<dyn WriteTransaction>> {
        let store = self.store.clone();
        let origin = self.origin.clone();
        let (conn, entry) = tokio::task::spawn_blocking(move || {
            let conn = store.writer()?;
            // The client's COMMIT returns once its change is on disk: the queue is
            // the only copy of it until the origin has it.
            conn.pragma_update(None, "synchronous", "FULL")
                .map_err(store_error)?;
            LocalStore::ensure_catalog(&conn)?;
            outbox::ensure(&conn)?;
            conn.execute_batch("BEGIN IMMEDIATE").map_err(store_error)?;
            // The entry's id is taken under the write lock, so ids follow commit order.
            conn.execute(
                &format!("INSERT INTO {OUTBOX} (origin, created_at) VALUES (?1, ?2)"),
                [&origin, &outbox::now()],
            )
            .map_err(store_error)?;
            let entry = conn.last_insert_rowid();
            Ok::<_, ConnectorError>((conn, entry))
        })
        .await
        .map_err(|e| {
            ConnectorError::DataFusion(datafusion::error::DataFusionError::External(Box::new(e)))
        })??;
        Ok(Box::new(SyncTransaction {
            conn: Arc::new(Mutex::new(Some(conn))),
            name: sync_origin(&self.origin),
            entry,
            queued: Arc::clone(&self.store.queued),
            ctx: None,
        }))
    }
}

/// A local transaction over sync copies; dropped while open, its connection
/// closes and SQLite rolls it back (nothing queued).
struct SyncTransaction {
    conn: Conn,
    name: String,
    entry: i64,
    queued: Arc<tokio::sync::watch::Sender<u64>>,
    ctx: Option<SessionContext>,
}

impl SyncTransaction {
    fn ctx(&mut self) -> &SessionContext {
        self.ctx.get_or_insert_with(SessionContext::new)
    }

    /// The rows `filter` keeps, with their rowids first.
    async fn matching(&mut self, rows: RecordBatch, filter: &Option<Expr>) -> Result<RecordBatch> {
        let Some(filter) = filter else {
            return Ok(rows);
        };
        let schema = rows.schema();
        let df = self.ctx().read_batch(rows)?.filter(filter.clone())?;
        let batches = df.collect().await?;
        concat_batches(&schema, &batches).map_err(arrow_error)
    }

    /// Written rows failing the check.
    async fn violations(&mut self, rows: &RecordBatch, check: Option<&Expr>) -> Result<u64> {
        let Some(check) = check else { return Ok(0) };
        if rows.num_rows() == 0 {
            return Ok(0);
        }
        let df = self
            .ctx()
            .read_batch(rows.clone())?
            .select(vec![check.clone().is_true().alias("passed")])?;
        let mut failed = 0;
        for b in df.collect().await? {
            let passed = b.column(0).as_boolean();
            failed += (passed.len() - passed.true_count()) as u64;
        }
        Ok(failed)
    }
}

/// The copy of `dataset`, or why a sync write cannot go on.
fn sync_copy(conn: &rusqlite::Connection, dataset: &str) -> Result<CopyInfo> {
    let info = copy_info(conn, dataset)?.ok_or_else(|| ConnectorError::NotMaterialized {
        dataset: dataset.to_string(),
        why: "it has no local copy yet to write to (the first copy is still being taken)".into(),
    })?;
    if info.key.is_empty() {
        return Err(ConnectorError::NotMaterialized {
            dataset: dataset.to_string(),
            why: "its local copy was not taken for sync (no key)".into(),
        });
    }
    Ok(info)
}

/// The copy's rows meeting `conditions` (SQLite SQL over the copy), rowid first.
fn read_rows(
    conn: &rusqlite::Connection,
    info: &CopyInfo,
    conditions: &[String],
) -> Result<RecordBatch> {
    let mut sql = format!(
        "SELECT rowid, {} FROM {}",
        info.schema
            .fields()
            .iter()
            .map(|f| quote_ident(f.name()))
            .collect::<Vec<_>>()
            .join(", "),
        quote_ident(&info.table)
    );
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    let mut stmt = conn.prepare(&sql).map_err(store_error)?;
    let mut rows = stmt.query([]).map_err(store_error)?;
    let types: Vec<DataType> = info
        .schema
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    let mut rowids = Vec::new();
    let mut columns: Vec<Decoder> = types.iter().map(|t| Decoder::new(t, 64)).collect();
    while let Some(row) = rows.next().map_err(store_error)? {
        rowids.push(row.get::<_, i64>(0).map_err(store_error)?);
        for (i, column) in columns.iter_mut().enumerate() {
            let v = row.get_ref(i + 1).map_err(store_error)?;
            column
                .push(v, &types[i])
                .map_err(|d| ConnectorError::LocalStore {
                    full: false,
                    message: format!("the local copy of {} is damaged: {}", info.dataset, d.0),
                })?;
        }
    }
    let mut fields = vec![Arc::new(Field::new(ROWID, DataType::Int64, false))];
    fields.extend(info.schema.fields().iter().cloned());
    let mut arrays: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(rowids))];
    for (c, t) in columns.iter_mut().zip(&types) {
        arrays.push(c.finish(t).map_err(arrow_error)?);
    }
    RecordBatch::try_new(
        Arc::new(Schema::new_with_metadata(
            fields,
            info.schema.metadata().clone(),
        )),
        arrays,
    )
    .map_err(arrow_error)
}

/// `rows` without the rowid column, and the rowids.
fn split_rowid(rows: &RecordBatch) -> Result<(Vec<i64>, RecordBatch)> {
    let ids = rows.column(0).as_primitive::<Int64Type>().values().to_vec();
    let rest = rows
        .project(&(1..rows.num_columns()).collect::<Vec<_>>())
        .map_err(arrow_error)?;
    Ok((ids, rest))
}

fn unique_error(dataset: &str, e: rusqlite::Error) -> ConnectorError {
    let unique = matches!(
        &e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    );
    if unique {
        ConnectorError::Origin {
            origin: dataset.to_string(),
            code: SqlState::UNIQUE_VIOLATION,
            message: format!(
                "duplicate key value violates unique constraint on the key of {dataset} (the local copy holds that key)"
            ),
        }
    } else {
        store_error(e)
    }
}

/// Writes `rows` (the copy's columns) into the copy: inserted, or over the rows
/// at `rowids`; `skip_existing` leaves out rows whose key the copy holds. The
/// indexes of the rows written.
pub(crate) fn put_rows(
    conn: &rusqlite::Connection,
    info: &CopyInfo,
    rows: &RecordBatch,
    rowids: Option<&[i64]>,
    skip_existing: bool,
) -> Result<Vec<u32>> {
    let table = quote_ident(&info.table);
    let n = info.schema.fields().len();
    let values = rows
        .columns()
        .iter()
        .map(Encoded::new)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(arrow_error)?;
    let sql = match rowids {
        Some(_) => format!(
            "UPDATE {table} SET {} WHERE rowid = ?{}",
            info.schema
                .fields()
                .iter()
                .enumerate()
                .map(|(i, f)| format!("{} = ?{}", quote_ident(f.name()), i + 1))
                .collect::<Vec<_>>()
                .join(", "),
            n + 1
        ),
        None => format!(
            "INSERT {} INTO {table} VALUES ({})",
            if skip_existing { "OR IGNORE" } else { "" },
            (1..=n)
                .map(|i| format!("?{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut stmt = conn.prepare_cached(&sql).map_err(store_error)?;
    let mut written = Vec::new();
    for row in 0..rows.num_rows() {
        for (i, v) in values.iter().enumerate() {
            stmt.raw_bind_parameter(i + 1, v.value(row).map_err(arrow_error)?)
                .map_err(store_error)?;
        }
        if let Some(ids) = rowids {
            stmt.raw_bind_parameter(n + 1, ToSqlOutput::from(ids[row]))
                .map_err(store_error)?;
        }
        let changed = stmt
            .raw_execute()
            .map_err(|e| unique_error(&info.dataset, e))?;
        if changed > 0 {
            written.push(row as u32);
        }
    }
    Ok(written)
}

/// Runs `f` inside a savepoint: a statement that fails leaves nothing behind.
fn statement<T>(
    conn: &rusqlite::Connection,
    f: impl FnOnce(&rusqlite::Connection) -> Result<T>,
) -> Result<T> {
    conn.execute_batch("SAVEPOINT switchyard_statement")
        .map_err(store_error)?;
    match f(conn) {
        Ok(v) => {
            conn.execute_batch("RELEASE switchyard_statement")
                .map_err(store_error)?;
            Ok(v)
        }
        Err(e) => {
            let _ = conn
                .execute_batch("ROLLBACK TO switchyard_statement; RELEASE switchyard_statement");
            Err(e)
        }
    }
}

fn adjust_rows(conn: &rusqlite::Connection, dataset: &str, delta: i64) -> Result<()> {
    if delta != 0 {
        conn.execute(
            &format!("UPDATE {CATALOG} SET rows = rows + ?1 WHERE dataset = ?2"),
            rusqlite::params![delta, dataset],
        )
        .map_err(store_error)?;
    }
    Ok(())
}

/// `rows` in `schema` where it can hold them (else as they are).
fn as_schema(rows: RecordBatch, schema: &SchemaRef) -> RecordBatch {
    RecordBatch::try_new(Arc::clone(schema), rows.columns().to_vec()).unwrap_or(rows)
}

#[async_trait]
impl WriteTransaction for SyncTransaction {
    fn origin(&self) -> &str {
        &self.name
    }

    async fn write(&mut self, request: WriteRequest<'_>) -> Result<Written> {
        let dataset = request.dataset.qualified_name();
        let entry = self.entry;
        let filter = match request.write {
            Write::Update { filter, .. } | Write::Delete { filter } => filter.clone(),
            Write::Insert { .. } => None,
        };
        let conditions: Vec<String> = filter
            .as_ref()
            .map(|f| {
                split_conjunction(f)
                    .into_iter()
                    .filter_map(|c| super::scan::condition(c, request.schema))
                    .collect()
            })
            .unwrap_or_default();
        let wants_rows = !matches!(request.write, Write::Insert { .. });
        let name = dataset.clone();
        let (info, candidates) = blocking(&self.conn, move |c| {
            let info = sync_copy(c, &name)?;
            let rows = if wants_rows {
                Some(read_rows(c, &info, &conditions)?)
            } else {
                None
            };
            Ok((info, rows))
        })
        .await?;
        let key = info.key.clone();
        let mut written = Written::default();
        match request.write {
            Write::Insert { rows, on_conflict } => {
                for k in &key {
                    if rows.schema().index_of(k).is_err() {
                        return Err(not_writable(
                            request.dataset,
                            format!(
                                "an INSERT into a sync dataset gives its key ({}): the origin's default for it cannot be known offline",
                                key.join(", ")
                            ),
                        ));
                    }
                }
                let skip_existing = match on_conflict {
                    None => false,
                    Some(c) => {
                        let on_key = match &c.target {
                            ConflictTarget::Any => true,
                            ConflictTarget::Columns(cols) => {
                                let mut a = cols.clone();
                                let mut b = key.clone();
                                a.sort();
                                b.sort();
                                a == b
                            }
                            ConflictTarget::Constraint(_) => false,
                        };
                        if !on_key || !matches!(c.action, ConflictAction::DoNothing) {
                            return Err(not_writable(
                                request.dataset,
                                "a sync dataset takes ON CONFLICT DO NOTHING on its key only"
                                    .into(),
                            ));
                        }
                        true
                    }
                };
                let columns: Vec<String> = rows
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect();
                let full = in_copy_columns(rows, &info.schema)?;
                written.violations = self.violations(&full, request.check).await?;
                if written.violations > 0 {
                    return Ok(written);
                }
                let info2 = info.clone();
                let key2 = key.clone();
                let new = blocking(&self.conn, move |c| {
                    statement(c, |c| {
                        let done = put_rows(c, &info2, &full, None, skip_existing)?;
                        let new = take_record_batch(&full, &UInt32Array::from(done))
                            .map_err(arrow_error)?;
                        if new.num_rows() > 0 {
                            adjust_rows(c, &info2.dataset, new.num_rows() as i64)?;
                            outbox::queue_op(
                                c,
                                entry,
                                &QueuedOp {
                                    dataset: info2.dataset.clone(),
                                    kind: OpKind::Insert,
                                    columns,
                                    old: None,
                                    new: Some(new.clone()),
                                },
                                &key2,
                            )?;
                        }
                        Ok(new)
                    })
                })
                .await?;
                written.rows = new.num_rows() as u64;
                if request.returning {
                    written.returned.push(as_schema(new, request.schema));
                }
            }
            Write::Update { assignments, .. } => {
                let matched = self
                    .matching(candidates.expect("read above"), &filter)
                    .await?;
                let (rowids, old) = split_rowid(&matched)?;
                let exprs = info
                    .schema
                    .fields()
                    .iter()
                    .map(|f| {
                        let e = assignments
                            .iter()
                            .find(|(c, _)| c == f.name())
                            .map(|(_, e)| e.clone())
                            .unwrap_or_else(|| Expr::Column(Column::new_unqualified(f.name())));
                        cast(e, f.data_type().clone()).alias(f.name())
                    })
                    .collect::<Vec<_>>();
                let new = if old.num_rows() == 0 {
                    in_copy_columns(&old, &info.schema)?
                } else {
                    let df = self.ctx().read_batch(old.clone())?;
                    let batches = df.select(exprs)?.collect().await?;
                    let new =
                        concat_batches(&batches[0].schema(), &batches).map_err(arrow_error)?;
                    in_copy_columns(&new, &info.schema)?
                };
                written.violations = self.violations(&new, request.check).await?;
                if written.violations > 0 {
                    return Ok(written);
                }
                let info2 = info.clone();
                let key2 = key.clone();
                let (old2, new2) = (old.clone(), new.clone());
                blocking(&self.conn, move |c| {
                    statement(c, |c| {
                        put_rows(c, &info2, &new2, Some(&rowids), false)?;
                        if new2.num_rows() > 0 {
                            outbox::queue_op(
                                c,
                                entry,
                                &QueuedOp {
                                    dataset: info2.dataset.clone(),
                                    kind: OpKind::Update,
                                    columns: Vec::new(),
                                    old: Some(in_copy_columns(&old2, &info2.schema)?),
                                    new: Some(new2),
                                },
                                &key2,
                            )?;
                        }
                        Ok(())
                    })
                })
                .await?;
                written.rows = new.num_rows() as u64;
                if request.returning {
                    written.returned.push(as_schema(new, request.schema));
                }
            }
            Write::Delete { .. } => {
                let matched = self
                    .matching(candidates.expect("read above"), &filter)
                    .await?;
                let (rowids, old) = split_rowid(&matched)?;
                let info2 = info.clone();
                let key2 = key.clone();
                let old2 = old.clone();
                blocking(&self.conn, move |c| {
                    statement(c, |c| {
                        let table = quote_ident(&info2.table);
                        let mut stmt = c
                            .prepare_cached(&format!("DELETE FROM {table} WHERE rowid = ?1"))
                            .map_err(store_error)?;
                        for id in &rowids {
                            stmt.execute([id]).map_err(store_error)?;
                        }
                        if old2.num_rows() > 0 {
                            adjust_rows(c, &info2.dataset, -(old2.num_rows() as i64))?;
                            outbox::queue_op(
                                c,
                                entry,
                                &QueuedOp {
                                    dataset: info2.dataset.clone(),
                                    kind: OpKind::Delete,
                                    columns: Vec::new(),
                                    old: Some(in_copy_columns(&old2, &info2.schema)?),
                                    new: None,
                                },
                                &key2,
                            )?;
                        }
                        Ok(())
                    })
                })
                .await?;
                written.rows = old.num_rows() as u64;
                if request.returning {
                    written.returned.push(as_schema(old, request.schema));
                }
            }
        }
        Ok(written)
    }

    async fn savepoint(&mut self, op: Savepoint, name: &str) -> Result<()> {
        let name = quote_ident(name);
        let sql = match op {
            Savepoint::Set => format!("SAVEPOINT {name}"),
            Savepoint::Release => format!("RELEASE SAVEPOINT {name}"),
            Savepoint::RollbackTo => format!("ROLLBACK TO SAVEPOINT {name}"),
        };
        blocking(&self.conn, move |c| {
            c.execute_batch(&sql).map_err(store_error)
        })
        .await
    }

    fn table(
        &self,
        _dataset: &Dataset,
        _schema: SchemaRef,
    ) -> Result<Option<Arc<dyn datafusion::catalog::TableProvider>>> {
        Ok(None)
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let entry = self.entry;
        let queued = blocking(&self.conn, move |c| {
            let ops: i64 = c
                .query_row(
                    &format!("SELECT count(*) FROM {OPS} WHERE entry = ?1"),
                    [entry],
                    |r| r.get(0),
                )
                .map_err(store_error)?;
            if ops == 0 {
                c.execute(&format!("DELETE FROM {OUTBOX} WHERE entry = ?1"), [entry])
                    .map_err(store_error)?;
            }
            c.execute_batch("COMMIT").map_err(store_error)?;
            Ok(ops > 0)
        })
        .await?;
        if queued {
            self.queued.send_modify(|n| *n += 1);
        }
        Ok(())
    }

    async fn rollback(self: Box<Self>) -> Result<()> {
        blocking(&self.conn, |c| {
            c.execute_batch("ROLLBACK").map_err(store_error)
        })
        .await
    }
}

fn not_writable(dataset: &Dataset, why: String) -> ConnectorError {
    ConnectorError::NotWritable {
        origin: dataset.origin.clone(),
        dataset: dataset.qualified_name(),
        why,
    }
}
