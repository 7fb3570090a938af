//! The federation executor of a PostgreSQL origin: runs each origin's part of a
//! plan as one SQL statement on the origin's pool.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::physical_plan::{PhysicalExpr, SendableRecordBatchStream};
use datafusion::sql::sqlparser::ast;
use datafusion::sql::unparser::dialect::{Dialect, PostgreSqlDialect};
use datafusion_federation::sql::{AstAnalyzer, SQLExecutor};

use super::pool::{Dedicated, PgPool};

/// The federation executor for one PostgreSQL origin.
#[derive(Debug)]
pub struct PgExecutor {
    runs_on: RunsOn,
    context: String,
}

/// Where an executor's statements run.
#[derive(Debug)]
enum RunsOn {
    /// Any connection of the pool.
    Pool(Arc<PgPool>),
    /// A transaction's own connection (its reads see its writes).
    Transaction(Arc<Dedicated>),
}

impl PgExecutor {
    /// An executor running SQL on `pool`.
    pub fn new(pool: Arc<PgPool>) -> Self {
        let context = Self::database(&pool);
        PgExecutor {
            runs_on: RunsOn::Pool(pool),
            context,
        }
    }

    /// An executor running SQL on a transaction's connection.
    pub(crate) fn in_transaction(pool: &Arc<PgPool>, conn: Arc<Dedicated>) -> Self {
        // Its own context: its scans merge with each other, never with the pool's.
        let context = format!("{}#{:p}", Self::database(pool), Arc::as_ptr(&conn));
        PgExecutor {
            runs_on: RunsOn::Transaction(conn),
            context,
        }
    }

    fn database(pool: &PgPool) -> String {
        let s = pool.settings();
        // Federation merges subplans whose executors share name and context into one
        // remote statement: the context must identify the database, not just the origin name.
        format!("postgres://{}@{}:{}/{}", s.user, s.host, s.port, s.database)
    }
}

#[async_trait]
impl SQLExecutor for PgExecutor {
    fn name(&self) -> &str {
        "postgres"
    }

    fn compute_context(&self) -> Option<String> {
        Some(self.context.clone())
    }

    fn dialect(&self) -> Arc<dyn Dialect> {
        Arc::new(PostgreSqlDialect {})
    }

    fn ast_analyzer(&self) -> Option<AstAnalyzer> {
        Some(Box::new(|mut statement: ast::Statement| {
            let _ = ast::visit_expressions_mut(&mut statement, |e| {
                bytea_literal(e);
                timestamptz_literal(e);
                std::ops::ControlFlow::<()>::Continue(())
            });
            Ok(statement)
        }))
    }

    fn execute(
        &self,
        query: &str,
        schema: SchemaRef,
        _filters: &[Arc<dyn PhysicalExpr>],
    ) -> DfResult<SendableRecordBatchStream> {
        Ok(match &self.runs_on {
            RunsOn::Pool(pool) => pool.query_stream(query.to_string(), schema),
            RunsOn::Transaction(conn) => conn.query_stream(query.to_string(), schema),
        })
    }

    async fn table_names(&self) -> DfResult<Vec<String>> {
        Err(DataFusionError::NotImplemented(
            "listing origin tables; datasets name them in the config".into(),
        ))
    }

    async fn get_table_schema(&self, table_name: &str) -> DfResult<SchemaRef> {
        match &self.runs_on {
            RunsOn::Pool(pool) => Ok(pool
                .describe(&format!("SELECT * FROM {table_name}"))
                .await?),
            RunsOn::Transaction(_) => Err(DataFusionError::NotImplemented(
                "describing tables inside a transaction; datasets are described first".into(),
            )),
        }
    }
}

/// DataFusion writes a timestamptz literal as `CAST('2024-02-08T17:18:30+00:00' AS
/// TIMESTAMP)`: PostgreSQL would drop the offset and read the time in the origin's
/// TimeZone. A timestamp literal that carries an offset is cast to `TIMESTAMP WITH
/// TIME ZONE`, which keeps it.
pub(crate) fn timestamptz_literal(e: &mut ast::Expr) {
    if let ast::Expr::Cast {
        data_type: ast::DataType::Timestamp(precision, zone @ ast::TimezoneInfo::None),
        expr,
        ..
    } = e
    {
        let _ = precision;
        if let ast::Expr::Value(v) = expr.as_ref() {
            if let ast::Value::SingleQuotedString(text) = &v.value {
                if has_offset(text) {
                    *zone = ast::TimezoneInfo::WithTimeZone;
                }
            }
        }
    }
}

/// Whether a timestamp's text ends in a UTC offset (`Z`, `+02`, `-05:30`).
fn has_offset(text: &str) -> bool {
    let t = text.trim();
    if t.ends_with('Z') || t.ends_with('z') {
        return true;
    }
    // The time part: after the date's last '-', look for a sign.
    let Some(time) = t.rfind([' ', 'T']).map(|i| &t[i + 1..]) else {
        return false;
    };
    time.rfind(['+', '-']).is_some_and(|i| {
        let offset = &time[i + 1..];
        !offset.is_empty() && offset.chars().all(|c| c.is_ascii_digit() || c == ':')
    })
}

/// DataFusion writes a binary literal as `X'dead'`, which PostgreSQL reads as a bit
/// string; `'\xdead'::bytea` is the bytea it means.
pub(crate) fn bytea_literal(e: &mut ast::Expr) {
    if let ast::Expr::Value(v) = e {
        if let ast::Value::HexStringLiteral(hex) = &v.value {
            *e = ast::Expr::Cast {
                kind: ast::CastKind::DoubleColon,
                expr: Box::new(ast::Expr::value(ast::Value::SingleQuotedString(format!(
                    "\\x{hex}"
                )))),
                data_type: ast::DataType::Bytea,
                array: false,
                format: None,
            };
        }
    }
}
