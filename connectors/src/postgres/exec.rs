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

use super::pool::PgPool;

/// The federation executor for one PostgreSQL origin.
#[derive(Debug)]
pub struct PgExecutor {
    pool: Arc<PgPool>,
    context: String,
}

impl PgExecutor {
    /// An executor running SQL on `pool`.
    pub fn new(pool: Arc<PgPool>) -> Self {
        let s = pool.settings();
        // Federation merges subplans whose executors share name and context into one
        // remote statement: the context must identify the database, not just the origin name.
        let context = format!("postgres://{}@{}:{}/{}", s.user, s.host, s.port, s.database);
        PgExecutor { pool, context }
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
        Ok(self.pool.query_stream(query.to_string(), schema))
    }

    async fn table_names(&self) -> DfResult<Vec<String>> {
        Err(DataFusionError::NotImplemented(
            "listing origin tables; datasets name them in the config".into(),
        ))
    }

    async fn get_table_schema(&self, table_name: &str) -> DfResult<SchemaRef> {
        Ok(self
            .pool
            .describe(&format!("SELECT * FROM {table_name}"))
            .await?)
    }
}

/// DataFusion writes a binary literal as `X'dead'`, which PostgreSQL reads as a bit
/// string; `'\xdead'::bytea` is the bytea it means.
pub(super) fn bytea_literal(e: &mut ast::Expr) {
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
