//! The federation executor of a SQLite file: each query on its own read-only
//! connection and blocking thread, `BATCH_ROWS`-row batches through a bounded
//! channel, SQLite interrupted when the stream is dropped.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch,
    StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{PhysicalExpr, SendableRecordBatchStream};
use datafusion::sql::sqlparser::ast::{self, VisitMut};
use datafusion::sql::unparser::dialect::{Dialect, SqliteDialect};
use datafusion_federation::sql::{AstAnalyzer, SQLExecutor};
use datafusion_table_providers::sqlite::sqlite_interval::SQLiteIntervalVisitor;
use futures::StreamExt;
use rusqlite::types::ValueRef;

/// Rows per Arrow batch, as for PostgreSQL origins.
const BATCH_ROWS: usize = 4096;

use super::{describe, open_readonly, sqlite_error, table_names};

/// Runs the SQL federation cuts out for one SQLite file.
pub(crate) struct SqliteExecutor {
    pub(crate) origin: String,
    pub(crate) path: PathBuf,
    /// Queries whose reader thread is running.
    pub(crate) readers: Arc<AtomicUsize>,
}

/// Counts a reader thread while it lives.
struct ReaderCount(Arc<AtomicUsize>);

impl ReaderCount {
    fn enter(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        ReaderCount(Arc::clone(count))
    }
}

impl Drop for ReaderCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// SQLite has no INTERVAL: `col + INTERVAL '1 day'` becomes `datetime(col, '+1 day')`.
fn sqlite_ast_analyzer(statement: ast::Statement) -> DfResult<ast::Statement> {
    match statement {
        ast::Statement::Query(mut query) => {
            let _ = query.visit(&mut SQLiteIntervalVisitor::default());
            let _ = ast::visit_expressions_mut(&mut query, |e| {
                super::like_escape(e);
                std::ops::ControlFlow::<()>::Continue(())
            });
            Ok(ast::Statement::Query(query))
        }
        other => Ok(other),
    }
}

/// Interrupts the query's SQLite connection when the stream reading it is dropped
/// (cancel, LIMIT satisfied, client gone); harmless once the query has finished.
struct InterruptOnDrop(rusqlite::InterruptHandle);

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        self.0.interrupt();
    }
}

#[async_trait]
impl SQLExecutor for SqliteExecutor {
    fn name(&self) -> &str {
        "sqlite"
    }

    fn compute_context(&self) -> Option<String> {
        // Tables of one file join there; different files never do.
        Some(format!("sqlite:{}", self.path.display()))
    }

    fn dialect(&self) -> Arc<dyn Dialect> {
        Arc::new(SqliteDialect {})
    }

    fn ast_analyzer(&self) -> Option<AstAnalyzer> {
        Some(Box::new(sqlite_ast_analyzer))
    }

    fn execute(
        &self,
        query: &str,
        schema: SchemaRef,
        _filters: &[Arc<dyn PhysicalExpr>],
    ) -> DfResult<SendableRecordBatchStream> {
        tracing::debug!(origin = %self.origin, sql = %query, "origin query");
        let conn = open_readonly(&self.origin, &self.path)?;
        let origin = self.origin.clone();
        let sql = query.to_string();
        let out_schema = Arc::clone(&schema);
        let reader = ReaderCount::enter(&self.readers);
        let what = format!("origin {origin}: the SQLite reader");
        Ok(read_on_blocking_thread(
            conn,
            schema,
            what,
            move |conn, tx| {
                let _reader = reader;
                stream_rows(&origin, &conn, &sql, &out_schema, tx)
            },
        ))
    }

    async fn table_names(&self) -> DfResult<Vec<String>> {
        Ok(table_names(&self.origin, &self.path)?)
    }

    async fn get_table_schema(&self, table_name: &str) -> DfResult<SchemaRef> {
        Ok(describe(
            &self.origin,
            &self.path,
            &format!("SELECT * FROM {table_name}"),
        )?)
    }
}

/// Runs `read` (which sends batches of `schema`) on a blocking thread over `conn`,
/// two batches in flight at most (SQLite reads ahead no further), and returns the
/// batches as a stream; dropping the stream interrupts SQLite. A panic in `read`
/// ends the stream with an error naming `what`.
pub(crate) fn read_on_blocking_thread<F>(
    conn: rusqlite::Connection,
    schema: SchemaRef,
    what: String,
    read: F,
) -> SendableRecordBatchStream
where
    F: FnOnce(
            rusqlite::Connection,
            &tokio::sync::mpsc::Sender<DfResult<RecordBatch>>,
        ) -> DfResult<()>
        + Send
        + 'static,
{
    let interrupt = InterruptOnDrop(conn.get_interrupt_handle());
    let (tx, rx) = tokio::sync::mpsc::channel::<DfResult<RecordBatch>>(2);
    tokio::task::spawn_blocking(move || {
        let run = std::panic::catch_unwind(AssertUnwindSafe(|| read(conn, &tx)));
        let failure = match run {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e,
            Err(_) => DataFusionError::Execution(format!("{what} failed unexpectedly")),
        };
        let _ = tx.blocking_send(Err(failure));
    });
    let batches = tokio_stream_from(rx).map(move |batch| {
        let _keep = &interrupt;
        batch
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, batches))
}

/// The receiver as a stream (tokio's channel without the tokio-stream crate).
fn tokio_stream_from(
    rx: tokio::sync::mpsc::Receiver<DfResult<RecordBatch>>,
) -> impl futures::Stream<Item = DfResult<RecordBatch>> + Send {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
}

/// Reads the rows of `sql` and sends them as batches of `schema`; stops quietly when
/// the receiver is gone.
fn stream_rows(
    origin: &str,
    conn: &rusqlite::Connection,
    sql: &str,
    schema: &SchemaRef,
    tx: &tokio::sync::mpsc::Sender<DfResult<RecordBatch>>,
) -> DfResult<()> {
    let fail = |e: rusqlite::Error| DataFusionError::from(sqlite_error(origin, e));
    let mut stmt = conn.prepare(sql).map_err(fail)?;
    if stmt.column_count() != schema.fields().len() {
        return Err(DataFusionError::Execution(format!(
            "origin {origin}: the query returns {} columns where {} were planned",
            stmt.column_count(),
            schema.fields().len()
        )));
    }
    let mut rows = stmt.query([]).map_err(fail)?;
    let mut columns: Vec<ColumnBuilder> = schema
        .fields()
        .iter()
        .map(|f| ColumnBuilder::for_type(f.data_type()))
        .collect();
    let mut count = 0;
    loop {
        let row = rows.next().map_err(fail)?;
        let Some(row) = row else { break };
        push_row(origin, &mut columns, row, schema)?;
        count += 1;
        if count == BATCH_ROWS {
            let batch = finish_batch(&mut columns, schema)?;
            if tx.blocking_send(Ok(batch)).is_err() {
                return Ok(());
            }
            count = 0;
        }
    }
    if count > 0 {
        let batch = finish_batch(&mut columns, schema)?;
        let _ = tx.blocking_send(Ok(batch));
    }
    Ok(())
}

/// All rows of `sql` (a write's RETURNING) as one batch of `schema`.
pub(crate) fn query_batch(
    origin: &str,
    conn: &rusqlite::Connection,
    sql: &str,
    schema: &SchemaRef,
) -> DfResult<RecordBatch> {
    let fail = |e: rusqlite::Error| DataFusionError::from(sqlite_error(origin, e));
    let mut stmt = conn.prepare(sql).map_err(fail)?;
    let mut rows = stmt.query([]).map_err(fail)?;
    let mut columns: Vec<ColumnBuilder> = schema
        .fields()
        .iter()
        .map(|f| ColumnBuilder::for_type(f.data_type()))
        .collect();
    while let Some(row) = rows.next().map_err(fail)? {
        push_row(origin, &mut columns, row, schema)?;
    }
    finish_batch(&mut columns, schema)
}

/// Appends one row's values to `columns`.
fn push_row(
    origin: &str,
    columns: &mut [ColumnBuilder],
    row: &rusqlite::Row<'_>,
    schema: &SchemaRef,
) -> DfResult<()> {
    for (i, column) in columns.iter_mut().enumerate() {
        let value = row
            .get_ref(i)
            .map_err(|e| DataFusionError::from(sqlite_error(origin, e)))?;
        column.push(value).map_err(|m| {
            DataFusionError::Execution(format!(
                "origin {origin}: column {}: {m}",
                schema.field(i).name()
            ))
        })?;
    }
    Ok(())
}

fn finish_batch(columns: &mut [ColumnBuilder], schema: &SchemaRef) -> DfResult<RecordBatch> {
    let arrays = columns
        .iter_mut()
        .zip(schema.fields())
        .map(|(c, f)| crate::columns::as_planned(c.finish(), f.data_type()))
        .collect::<DfResult<Vec<ArrayRef>>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), arrays)?)
}

/// Collects one column in the Arrow type nearest SQLite's storage classes; the
/// finished array is cast to the planned type.
enum ColumnBuilder {
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Binary(BinaryBuilder),
    Text(StringBuilder),
}

impl ColumnBuilder {
    fn for_type(data_type: &DataType) -> Self {
        use DataType::*;
        match data_type {
            Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 => {
                ColumnBuilder::Int(Int64Builder::new())
            }
            Float16 | Float32 | Float64 => ColumnBuilder::Float(Float64Builder::new()),
            Boolean => ColumnBuilder::Bool(BooleanBuilder::new()),
            Binary | LargeBinary | BinaryView | FixedSizeBinary(_) => {
                ColumnBuilder::Binary(BinaryBuilder::new())
            }
            // Text, decimals, dates and times: SQLite's text (or number) is parsed by
            // Arrow's cast, which fails loudly on a value it cannot read.
            _ => ColumnBuilder::Text(StringBuilder::new()),
        }
    }

    fn push(&mut self, value: ValueRef<'_>) -> std::result::Result<(), String> {
        if let ValueRef::Null = value {
            self.append_null();
            return Ok(());
        }
        match (self, value) {
            (ColumnBuilder::Int(b), ValueRef::Integer(i)) => b.append_value(i),
            (ColumnBuilder::Int(b), ValueRef::Real(f)) if f.fract() == 0.0 => {
                b.append_value(f as i64)
            }
            (ColumnBuilder::Int(b), ValueRef::Text(t)) => {
                let text = String::from_utf8_lossy(t);
                let i = text
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| format!("'{text}' is not an integer"))?;
                b.append_value(i)
            }
            (ColumnBuilder::Float(b), ValueRef::Integer(i)) => b.append_value(i as f64),
            (ColumnBuilder::Float(b), ValueRef::Real(f)) => b.append_value(f),
            (ColumnBuilder::Float(b), ValueRef::Text(t)) => {
                let text = String::from_utf8_lossy(t);
                let f = text
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| format!("'{text}' is not a number"))?;
                b.append_value(f)
            }
            (ColumnBuilder::Bool(b), ValueRef::Integer(i)) => b.append_value(i != 0),
            (ColumnBuilder::Bool(b), ValueRef::Real(f)) => b.append_value(f != 0.0),
            (ColumnBuilder::Bool(b), ValueRef::Text(t)) => {
                match String::from_utf8_lossy(t)
                    .trim()
                    .to_ascii_lowercase()
                    .as_str()
                {
                    "1" | "t" | "true" => b.append_value(true),
                    "0" | "f" | "false" => b.append_value(false),
                    other => return Err(format!("'{other}' is not a boolean")),
                }
            }
            (ColumnBuilder::Binary(b), ValueRef::Blob(v) | ValueRef::Text(v)) => b.append_value(v),
            (ColumnBuilder::Text(b), ValueRef::Text(t)) => {
                b.append_value(String::from_utf8_lossy(t))
            }
            (ColumnBuilder::Text(b), ValueRef::Integer(i)) => b.append_value(i.to_string()),
            (ColumnBuilder::Text(b), ValueRef::Real(f)) => b.append_value(f.to_string()),
            (ColumnBuilder::Text(b), ValueRef::Blob(v)) => {
                b.append_value(String::from_utf8_lossy(v))
            }
            (_, other) => {
                return Err(format!(
                    "SQLite returned a {} value that does not fit the planned type",
                    other.data_type()
                ))
            }
        }
        Ok(())
    }

    fn append_null(&mut self) {
        match self {
            ColumnBuilder::Int(b) => b.append_null(),
            ColumnBuilder::Float(b) => b.append_null(),
            ColumnBuilder::Bool(b) => b.append_null(),
            ColumnBuilder::Binary(b) => b.append_null(),
            ColumnBuilder::Text(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Int(b) => Arc::new(b.finish()),
            ColumnBuilder::Float(b) => Arc::new(b.finish()),
            ColumnBuilder::Bool(b) => Arc::new(b.finish()),
            ColumnBuilder::Binary(b) => Arc::new(b.finish()),
            ColumnBuilder::Text(b) => Arc::new(b.finish()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Decimal128Type, Field, Int32Type, Schema};
    use futures::TryStreamExt;
    use std::time::Duration;

    fn store(rows: i64) -> (tempfile::TempDir, SqliteExecutor) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE t (id INTEGER, price REAL, name TEXT, flag BOOLEAN);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
             INSERT INTO t SELECT i, i * 0.5, 'row ' || i, i % 2 FROM n;
             INSERT INTO t VALUES (NULL, NULL, NULL, NULL);",
        )
        .unwrap();
        conn.execute("DELETE FROM t WHERE id > ?1", [rows]).unwrap();
        let executor = SqliteExecutor {
            origin: "lite".into(),
            path,
            readers: Arc::default(),
        };
        (dir, executor)
    }

    /// Every batch `sql` returns as `fields`, or the statement's error.
    async fn read(
        executor: &SqliteExecutor,
        sql: &str,
        fields: &[(&str, DataType)],
    ) -> DfResult<Vec<RecordBatch>> {
        executor
            .execute(sql, schema(fields), &[])?
            .try_collect()
            .await
    }

    fn schema(fields: &[(&str, DataType)]) -> SchemaRef {
        Arc::new(Schema::new(
            fields
                .iter()
                .map(|(n, t)| Field::new(*n, t.clone(), true))
                .collect::<Vec<_>>(),
        ))
    }

    #[tokio::test]
    async fn rows_stream_in_bounded_batches_with_nulls() {
        let (_dir, executor) = store(10_000);
        let batches = read(
            &executor,
            "SELECT id, price, name, flag FROM t ORDER BY id NULLS LAST",
            &[
                ("id", DataType::Int64),
                ("price", DataType::Float64),
                ("name", DataType::Utf8),
                ("flag", DataType::Boolean),
            ],
        )
        .await
        .unwrap();
        let sizes: Vec<usize> = batches.iter().map(|b| b.num_rows()).collect();
        assert_eq!(sizes, vec![4096, 4096, 1809]);
        let last = batches.last().unwrap();
        let row = last.num_rows() - 2;
        assert_eq!(
            last.column(0)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .value(row),
            10_000
        );
        assert_eq!(
            last.column(1)
                .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                .value(row),
            5000.0
        );
        assert_eq!(last.column(2).as_string::<i32>().value(row), "row 10000");
        assert!(!last.column(3).as_boolean().value(row));
        for c in 0..4 {
            assert!(last.column(c).is_null(row + 1), "column {c} keeps NULL");
        }
    }

    #[tokio::test]
    async fn values_are_cast_to_the_planned_types() {
        let (_dir, executor) = store(3);
        let batches = read(
            &executor,
            "SELECT count(*), sum(price), '2024-02-29' FROM t",
            &[
                ("n", DataType::Int32),
                ("total", DataType::Decimal128(10, 2)),
                ("d", DataType::Date32),
            ],
        )
        .await
        .unwrap();
        let b = &batches[0];
        assert_eq!(b.column(0).as_primitive::<Int32Type>().value(0), 4);
        assert_eq!(b.column(1).as_primitive::<Decimal128Type>().value(0), 300);
        assert_eq!(b.column(2).data_type(), &DataType::Date32);
    }

    #[tokio::test]
    async fn a_value_that_does_not_fit_fails_the_statement_only() {
        let (_dir, executor) = store(5);
        let err = read(
            &executor,
            "SELECT name FROM t",
            &[("name", DataType::Int64)],
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string().contains("'row 1' is not an integer"),
            "{err}"
        );
        // The origin still answers the next statement.
        let batches = read(
            &executor,
            "SELECT id FROM t WHERE id = 5",
            &[("id", DataType::Int64)],
        )
        .await
        .unwrap();
        assert_eq!(batches[0].num_rows(), 1);
    }

    #[tokio::test]
    async fn dropping_the_stream_interrupts_sqlite() {
        let (_dir, executor) = store(100_000);
        let schema = schema(&[("n", DataType::Int64)]);
        // Sorting a 10^10-row cross join: SQLite would work for hours before a first row.
        let mut stream = executor
            .execute(
                "SELECT a.id * b.id AS n FROM t a, t b ORDER BY n",
                schema,
                &[],
            )
            .unwrap();
        let first = tokio::time::timeout(Duration::from_millis(500), stream.try_next()).await;
        assert!(first.is_err(), "no row can be ready yet");
        assert_eq!(executor.readers.load(Ordering::SeqCst), 1);
        drop(stream);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while executor.readers.load(Ordering::SeqCst) > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the reader still runs"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
