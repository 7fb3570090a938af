//! SQL of writes for SQL origins (PostgreSQL, SQLite and the local store): each
//! [`Write`] as statements rendered from the checked plan's expressions by
//! DataFusion's unparser in the origin's dialect, inserted values as literals.
//!
//! Inserted values are written as untyped literals of their text form, so that the
//! origin reads each as its column's type (PostgreSQL: uuid, json, timestamptz with
//! its offset, enums), as it does for `INSERT ... VALUES ('...')` typed by hand.

use std::fmt::Write as _;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::Expr;
use datafusion::sql::sqlparser::ast;
use datafusion::sql::unparser::dialect::{Dialect, PostgreSqlDialect, SqliteDialect};
use datafusion::sql::unparser::Unparser;
use switchyard_config::{Dataset, DatasetSource};

use crate::sql::{parse_table_name, quote_ident, quoted};
use crate::write::{ConflictAction, ConflictTarget, OnConflict, Write};
use crate::{ConnectorError, Result};

/// Rows per `INSERT` statement: large enough to amortise a round trip, small
/// enough to keep one statement's text modest.
pub(crate) const INSERT_CHUNK: usize = 1000;

/// The name of the check column in returned rows.
pub(crate) const CHECK_COLUMN: &str = "switchyard_check";

/// The SQL dialect a write is rendered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// PostgreSQL.
    Postgres,
    /// SQLite (also the local store).
    Sqlite,
}

impl Flavor {
    fn dialect(self) -> &'static dyn Dialect {
        match self {
            Flavor::Postgres => &PostgreSqlDialect {},
            Flavor::Sqlite => &SqliteDialect {},
        }
    }
}

/// The statements of `write` on `table` (quoted), each ending in `returning`
/// (` RETURNING ...` or empty).
pub(crate) fn statements(
    flavor: Flavor,
    table: &str,
    write: &Write,
    returning: &str,
) -> Result<Vec<String>> {
    Ok(match write {
        Write::Insert { rows, on_conflict } => {
            let (conflict, table) = match on_conflict {
                None => (String::new(), table.to_string()),
                Some(c) => {
                    let table = match c.action {
                        ConflictAction::DoUpdate { .. } => {
                            format!("{table} AS {}", quote_ident(TARGET_ALIAS))
                        }
                        ConflictAction::DoNothing => table.to_string(),
                    };
                    (conflict_sql(flavor, c)?, table)
                }
            };
            insert_sql(flavor, &table, rows, &conflict, returning)?
        }
        Write::Update {
            assignments,
            filter,
        } => {
            let mut sql = format!(
                "UPDATE {table} SET {}",
                assignments_sql(flavor, assignments, None)?
            );
            if let Some(f) = filter {
                let _ = write!(sql, " WHERE {}", render(flavor, f)?);
            }
            sql.push_str(returning);
            vec![sql]
        }
        Write::Delete { filter } => {
            let mut sql = format!("DELETE FROM {table}");
            if let Some(f) = filter {
                let _ = write!(sql, " WHERE {}", render(flavor, f)?);
            }
            sql.push_str(returning);
            vec![sql]
        }
    })
}

/// The quoted origin table a dataset writes to.
pub(crate) fn target(origin: &str, dataset: &Dataset) -> Result<String> {
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
pub(crate) fn render(flavor: Flavor, expr: &Expr) -> Result<String> {
    render_as(flavor, expr, None)
}

/// [`render`], the target's columns qualified by `target` when given.
fn render_as(flavor: Flavor, expr: &Expr, target: Option<&str>) -> Result<String> {
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
    let mut sql = Unparser::new(flavor.dialect()).expr_to_sql(&expr)?;
    if flavor == Flavor::Postgres {
        let _ = ast::visit_expressions_mut(&mut sql, |e| {
            crate::postgres::bytea_literal(e);
            crate::postgres::timestamptz_literal(e);
            std::ops::ControlFlow::<()>::Continue(())
        });
    }
    if flavor == Flavor::Sqlite {
        let _ = ast::visit_expressions_mut(&mut sql, |e| {
            crate::sqlite::like_escape(e);
            std::ops::ControlFlow::<()>::Continue(())
        });
    }
    Ok(sql.to_string())
}

fn assignments_sql(
    flavor: Flavor,
    assignments: &[(String, Expr)],
    target: Option<&str>,
) -> Result<String> {
    let mut parts = Vec::with_capacity(assignments.len());
    for (column, value) in assignments {
        parts.push(format!(
            "{} = {}",
            quote_ident(column),
            render_as(flavor, value, target)?
        ));
    }
    Ok(parts.join(", "))
}

fn conflict_sql(flavor: Flavor, conflict: &OnConflict) -> Result<String> {
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
                assignments_sql(flavor, assignments, target)?
            );
            if let Some(f) = filter {
                let _ = write!(sql, " WHERE {}", render_as(flavor, f, target)?);
            }
        }
    }
    Ok(sql)
}

/// `INSERT INTO table (columns) VALUES ...` per chunk of rows.
fn insert_sql(
    flavor: Flavor,
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
                .map(|c| Literals::new(flavor, c, &options))
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
    flavor: Flavor,
    array: &'a ArrayRef,
    formatter: ArrayFormatter<'a>,
}

impl<'a> Literals<'a> {
    fn new(flavor: Flavor, array: &'a ArrayRef, options: &'a FormatOptions<'a>) -> Result<Self> {
        Ok(Literals {
            flavor,
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
                for b in bytes {
                    let _ = write!(hex, "{b:02x}");
                }
                match self.flavor {
                    Flavor::Postgres => push_quoted(sql, &format!("\\x{hex}")),
                    Flavor::Sqlite => {
                        let _ = write!(sql, "X'{hex}'");
                    }
                }
            }
            DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(..)
            | DataType::Struct(_)
            | DataType::Map(..) => {
                let value = ScalarValue::try_from_array(self.array.as_ref(), row)?;
                sql.push_str(&render(self.flavor, &Expr::Literal(value, None))?);
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
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::logical_expr::{col, lit};
    use std::sync::Arc;

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
        let sql =
            insert_sql(Flavor::Postgres, "\"t\"", &batch, "", " RETURNING \"id\"").expect("sql");
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
            render(Flavor::Postgres, &e).expect("sql"),
            "((\"n\" + 1) + \"excluded\".\"n\")"
        );
    }
}

#[cfg(test)]
mod timestamp_tests {
    use super::*;
    use datafusion::logical_expr::col;

    #[test]
    fn timestamptz_literals_keep_their_offset() {
        let literal = Expr::Literal(
            ScalarValue::TimestampNanosecond(
                Some(1_707_412_710_000_000_000),
                Some("+00:00".into()),
            ),
            None,
        );
        assert_eq!(
            render(Flavor::Postgres, &col("at").gt(literal)).unwrap(),
            "(\"at\" > CAST('2024-02-08T17:18:30+00:00' AS TIMESTAMP WITH TIME ZONE))"
        );
        let naive = Expr::Literal(
            ScalarValue::TimestampNanosecond(Some(1_707_412_710_000_000_000), None),
            None,
        );
        assert_eq!(
            render(Flavor::Postgres, &col("at").gt(naive)).unwrap(),
            "(\"at\" > CAST('2024-02-08 17:18:30' AS TIMESTAMP))"
        );
    }
}
