//! Writes to a PostgreSQL origin: each [`Write`] becomes one SQL statement (an
//! insert of many rows becomes one per chunk) rendered from the checked plan's
//! expressions by DataFusion's unparser, run on a connection the transaction keeps
//! from `BEGIN` to its end.
//!
//! Inserted values are written as untyped literals of their text form, so that
//! PostgreSQL reads each as its column's type (uuid, json, timestamptz with its
//! offset, enums), as it does for `INSERT ... VALUES ('...')` typed by hand.

use std::fmt::Write as _;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::Expr;
use datafusion::sql::sqlparser::ast;
use datafusion::sql::unparser::dialect::PostgreSqlDialect;
use datafusion::sql::unparser::Unparser;
use switchyard_config::{Dataset, DatasetSource};

use super::pool::{Dedicated, PgPool};
use super::PgExecutor;
use crate::sql::{parse_table_name, quote_ident, quoted};
use crate::write::{
    ConflictAction, ConflictTarget, Savepoint, Write, WriteRequest, WriteTransaction, Writes,
    Written,
};
use crate::{ConnectorError, Result};
use datafusion_federation::sql::SQLFederationProvider;

/// Rows per `INSERT` statement: large enough to amortise a round trip, small
/// enough to keep one statement's text modest.
const INSERT_CHUNK: usize = 1000;

/// The name of the check column in returned rows.
const CHECK_COLUMN: &str = "switchyard_check";

/// Writes to one PostgreSQL origin.
#[derive(Debug)]
pub struct PgWrites {
    pool: Arc<PgPool>,
}

impl PgWrites {
    /// Writes over `pool`.
    pub fn new(pool: Arc<PgPool>) -> Self {
        PgWrites { pool }
    }
}

#[async_trait]
impl Writes for PgWrites {
    async fn begin(&self) -> Result<Box<dyn WriteTransaction>> {
        let conn = Arc::new(self.pool.dedicated().await?);
        conn.batch_execute("BEGIN").await?;
        let provider = Arc::new(SQLFederationProvider::new(Arc::new(
            PgExecutor::in_transaction(&self.pool, Arc::clone(&conn)),
        )));
        Ok(Box::new(PgTransaction {
            conn: Some(conn),
            origin: self.pool.origin().to_string(),
            provider,
        }))
    }
}

/// A transaction on a connection of its own. Dropped while open, the connection is
/// closed instead of pooled, which rolls the transaction back at the origin.
struct PgTransaction {
    conn: Option<Arc<Dedicated>>,
    origin: String,
    /// Federation over the transaction's connection, for its reads.
    provider: Arc<SQLFederationProvider>,
}

impl PgTransaction {
    fn conn(&self) -> &Dedicated {
        self.conn
            .as_ref()
            .expect("an open transaction has its connection")
    }

    async fn end(mut self: Box<Self>, sql: &str) -> Result<()> {
        let conn = self
            .conn
            .take()
            .expect("an open transaction has its connection");
        let ended = conn.batch_execute(sql).await;
        // The readers' executor shares the connection: let go of it first, so that
        // the connection returns to the pool unless a read still holds it.
        self.provider = Arc::new(SQLFederationProvider::new(Arc::new(PgExecutor::new(
            Arc::clone(conn.pool()),
        ))));
        match (ended, Arc::try_unwrap(conn)) {
            (Ok(()), Ok(conn)) => {
                conn.release();
                Ok(())
            }
            // A read still holds it: the connection closes when that read ends.
            (Ok(()), Err(_shared)) => Ok(()),
            (Err(e), Ok(conn)) => {
                conn.discard();
                Err(e)
            }
            (Err(e), Err(_shared)) => Err(e),
        }
    }
}

impl Drop for PgTransaction {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            tracing::debug!(origin = %self.origin, "transaction abandoned: closing its connection");
            if let Ok(conn) = Arc::try_unwrap(conn) {
                conn.discard();
            }
        }
    }
}

#[async_trait]
impl WriteTransaction for PgTransaction {
    fn origin(&self) -> &str {
        &self.origin
    }

    async fn write(&mut self, request: WriteRequest<'_>) -> Result<Written> {
        let table = target(&self.origin, request.dataset)?;
        let mut returned_schema: Vec<Field> = Vec::new();
        let mut returning = Vec::new();
        if let Some(check) = request.check {
            returning.push(format!("({}) IS TRUE AS {CHECK_COLUMN}", render(check)?));
            returned_schema.push(Field::new(CHECK_COLUMN, DataType::Boolean, false));
        }
        if request.returning {
            for field in request.schema.fields() {
                returning.push(quote_ident(field.name()));
                returned_schema.push(field.as_ref().clone());
            }
        }
        let returning_sql = if returning.is_empty() {
            String::new()
        } else {
            format!(" RETURNING {}", returning.join(", "))
        };
        let statements = match request.write {
            Write::Insert { rows, on_conflict } => {
                let (conflict, table) = match on_conflict {
                    None => (String::new(), table),
                    Some(c) => {
                        let table = match c.action {
                            ConflictAction::DoUpdate { .. } => {
                                format!("{table} AS {}", quote_ident(TARGET_ALIAS))
                            }
                            ConflictAction::DoNothing => table,
                        };
                        (conflict_sql(c)?, table)
                    }
                };
                insert_sql(&table, rows, &conflict, &returning_sql)?
            }
            Write::Update {
                assignments,
                filter,
            } => {
                let mut sql = format!("UPDATE {table} SET {}", assignments_sql(assignments, None)?);
                if let Some(f) = filter {
                    let _ = write!(sql, " WHERE {}", render(f)?);
                }
                sql.push_str(&returning_sql);
                vec![sql]
            }
            Write::Delete { filter } => {
                let mut sql = format!("DELETE FROM {table}");
                if let Some(f) = filter {
                    let _ = write!(sql, " WHERE {}", render(f)?);
                }
                sql.push_str(&returning_sql);
                vec![sql]
            }
        };
        let returned_schema = Arc::new(Schema::new(returned_schema));
        let mut written = Written::default();
        for sql in statements {
            tracing::debug!(origin = %self.origin, %sql, "origin write");
            if returning.is_empty() {
                written.rows += self.conn().execute(&sql).await?;
                continue;
            }
            let batch = self.conn().query(&sql, &returned_schema).await?;
            written.rows += batch.num_rows() as u64;
            let mut batch = batch;
            if request.check.is_some() {
                let passed = batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::BooleanArray>()
                    .expect("the check column is boolean");
                written.violations += (passed.len() - passed.true_count()) as u64;
                batch = batch
                    .project(&(1..batch.num_columns()).collect::<Vec<_>>())
                    .map_err(DataFusionError::from)?;
            }
            if request.returning {
                written.returned.push(batch);
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
        self.conn().batch_execute(&sql).await
    }

    fn table(
        &self,
        dataset: &Dataset,
        schema: datafusion::arrow::datatypes::SchemaRef,
    ) -> Result<Option<Arc<dyn datafusion::catalog::TableProvider>>> {
        let local_name = dataset.qualified_name();
        let wanted = crate::sql::DatasetSql::of(&local_name, &dataset.source)?;
        Ok(Some(wanted.into_table(
            &local_name,
            schema,
            &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
            &self.provider,
        )?))
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.end("COMMIT").await
    }

    async fn rollback(self: Box<Self>) -> Result<()> {
        self.end("ROLLBACK").await
    }
}

/// The quoted origin table a dataset writes to.
fn target(origin: &str, dataset: &Dataset) -> Result<String> {
    match &dataset.source {
        DatasetSource::Table { table, filters } if filters.is_empty() => {
            Ok(quoted(&parse_table_name(table)))
        }
        _ => Err(ConnectorError::NotWritable {
            origin: origin.to_string(),
            dataset: dataset.qualified_name(),
            why: "only datasets that are a whole origin table take writes (this one is a \
                  query or has filters:)"
                .into(),
        }),
    }
}

/// The target's alias in an `INSERT ... ON CONFLICT DO UPDATE`, where `excluded`
/// is in scope too and a bare column name would be ambiguous.
const TARGET_ALIAS: &str = "switchyard_target";

/// `expr` in PostgreSQL's SQL, its columns unqualified (the statement has one
/// table) except `excluded.*`.
fn render(expr: &Expr) -> Result<String> {
    render_as(expr, None)
}

/// [`render`], the target's columns qualified by `target` when given.
fn render_as(expr: &Expr, target: Option<&str>) -> Result<String> {
    let expr = expr
        .clone()
        .transform(|e| match e {
            Expr::Column(c) if c.relation.as_ref().is_some_and(|r| r.table() == "excluded") => {
                Ok(Transformed::no(Expr::Column(c)))
            }
            Expr::Column(c) => Ok(Transformed::yes(Expr::Column(Column::new(
                target.map(datafusion::common::TableReference::bare),
                c.name,
            )))),
            other => Ok(Transformed::no(other)),
        })?
        .data;
    let mut sql = Unparser::new(&PostgreSqlDialect {}).expr_to_sql(&expr)?;
    let _ = ast::visit_expressions_mut(&mut sql, |e| {
        super::exec::bytea_literal(e);
        std::ops::ControlFlow::<()>::Continue(())
    });
    Ok(sql.to_string())
}

fn assignments_sql(assignments: &[(String, Expr)], target: Option<&str>) -> Result<String> {
    let mut parts = Vec::with_capacity(assignments.len());
    for (column, value) in assignments {
        parts.push(format!(
            "{} = {}",
            quote_ident(column),
            render_as(value, target)?
        ));
    }
    Ok(parts.join(", "))
}

fn conflict_sql(conflict: &crate::write::OnConflict) -> Result<String> {
    let mut sql = String::from(" ON CONFLICT");
    match &conflict.target {
        ConflictTarget::Any => {}
        ConflictTarget::Columns(columns) => {
            let columns: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
            let _ = write!(sql, " ({})", columns.join(", "));
        }
        ConflictTarget::Constraint(name) => {
            let _ = write!(sql, " ON CONSTRAINT {}", quote_ident(name));
        }
    }
    match &conflict.action {
        ConflictAction::DoNothing => sql.push_str(" DO NOTHING"),
        ConflictAction::DoUpdate {
            assignments,
            filter,
        } => {
            let target = Some(TARGET_ALIAS);
            let _ = write!(
                sql,
                " DO UPDATE SET {}",
                assignments_sql(assignments, target)?
            );
            if let Some(f) = filter {
                let _ = write!(sql, " WHERE {}", render_as(f, target)?);
            }
        }
    }
    Ok(sql)
}

/// `INSERT INTO table (columns) VALUES ...` per chunk of rows.
fn insert_sql(
    table: &str,
    rows: &RecordBatch,
    conflict: &str,
    returning: &str,
) -> Result<Vec<String>> {
    let schema = rows.schema();
    let columns: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| quote_ident(f.name()))
        .collect();
    let head = if columns.is_empty() {
        format!("INSERT INTO {table}")
    } else {
        format!("INSERT INTO {table} ({})", columns.join(", "))
    };
    let options = FormatOptions::default().with_null("");
    let mut statements = Vec::new();
    let mut start = 0;
    while start < rows.num_rows() {
        // Only defaults: one statement per row, as PostgreSQL has no multi-row form.
        let len = if columns.is_empty() {
            1
        } else {
            INSERT_CHUNK.min(rows.num_rows() - start)
        };
        let chunk = rows.slice(start, len);
        let mut sql = head.clone();
        if columns.is_empty() {
            sql.push_str(" DEFAULT VALUES");
        } else {
            sql.push_str(" VALUES ");
            let literals = chunk
                .columns()
                .iter()
                .map(|c| Literals::new(c, &options))
                .collect::<Result<Vec<_>>>()?;
            for row in 0..len {
                if row > 0 {
                    sql.push_str(", ");
                }
                sql.push('(');
                for (i, column) in literals.iter().enumerate() {
                    if i > 0 {
                        sql.push_str(", ");
                    }
                    column.write(row, &mut sql)?;
                }
                sql.push(')');
            }
        }
        sql.push_str(conflict);
        sql.push_str(returning);
        statements.push(sql);
        start += len;
    }
    Ok(statements)
}

/// One column's values as SQL literals.
struct Literals<'a> {
    array: &'a ArrayRef,
    formatter: ArrayFormatter<'a>,
}

impl<'a> Literals<'a> {
    fn new(array: &'a ArrayRef, options: &'a FormatOptions<'a>) -> Result<Self> {
        Ok(Literals {
            array,
            formatter: ArrayFormatter::try_new(array.as_ref(), options)
                .map_err(DataFusionError::from)?,
        })
    }

    fn write(&self, row: usize, sql: &mut String) -> Result<()> {
        if self.array.is_null(row) {
            sql.push_str("NULL");
            return Ok(());
        }
        match self.array.data_type() {
            DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Decimal128(..)
            | DataType::Decimal256(..) => {
                let _ = write!(sql, "{}", self.formatter.value(row));
            }
            DataType::Float16 | DataType::Float32 | DataType::Float64 => {
                let text = self.formatter.value(row).to_string();
                if text.parse::<f64>().is_ok_and(f64::is_finite) {
                    sql.push_str(&text);
                } else {
                    // NaN and infinities are text to PostgreSQL.
                    push_quoted(sql, &text.replace("inf", "Infinity"));
                }
            }
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
                let value = ScalarValue::try_from_array(self.array.as_ref(), row)?;
                let bytes = match &value {
                    ScalarValue::Binary(Some(b))
                    | ScalarValue::LargeBinary(Some(b))
                    | ScalarValue::BinaryView(Some(b)) => b.as_slice(),
                    _ => &[],
                };
                let mut hex = String::with_capacity(bytes.len() * 2 + 2);
                hex.push_str("\\x");
                for b in bytes {
                    let _ = write!(hex, "{b:02x}");
                }
                push_quoted(sql, &hex);
            }
            DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(..)
            | DataType::Struct(_)
            | DataType::Map(..) => {
                let value = ScalarValue::try_from_array(self.array.as_ref(), row)?;
                sql.push_str(&render(&Expr::Literal(value, None))?);
            }
            _ => push_quoted(sql, &self.formatter.value(row).to_string()),
        }
        Ok(())
    }
}

/// `'text'` with quotes doubled (PostgreSQL's standard strings).
fn push_quoted(sql: &mut String, text: &str) {
    sql.push('\'');
    sql.push_str(&text.replace('\'', "''"));
    sql.push('\'');
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, Int32Array, StringArray};
    use datafusion::logical_expr::{col, lit};

    #[test]
    fn inserts_render_values_as_literals_in_chunks() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("x", DataType::Float64, true),
        ]));
        let n = INSERT_CHUNK + 1;
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from_iter_values(0..n as i32)),
                Arc::new(StringArray::from_iter(
                    (0..n).map(|i| (i != 1).then(|| format!("o'{i}"))),
                )),
                Arc::new(Float64Array::from_iter_values((0..n).map(|i| {
                    if i == 2 {
                        f64::NAN
                    } else {
                        0.5
                    }
                }))),
            ],
        )
        .expect("batch");
        let sql = insert_sql("\"t\"", &batch, "", " RETURNING \"id\"").expect("sql");
        assert_eq!(sql.len(), 2);
        assert!(sql[0].starts_with(
            "INSERT INTO \"t\" (\"id\", \"name\", \"x\") VALUES (0, 'o''0', 0.5), (1, NULL, 0.5), (2, 'o''2', 'NaN')"
        ));
        assert_eq!(
            sql[1],
            format!(
                "INSERT INTO \"t\" (\"id\", \"name\", \"x\") VALUES ({0}, 'o''{0}', 0.5) RETURNING \"id\"",
                INSERT_CHUNK
            )
        );
    }

    #[test]
    fn expressions_lose_their_table_but_not_excluded() {
        let e = col("shop.users.n") + lit(1) + col("excluded.n");
        assert_eq!(
            render(&e).expect("sql"),
            "((\"n\" + 1) + \"excluded\".\"n\")"
        );
    }
}
