//! A dataset defined by a SQL query run at its origin.
//!
//! Federation writes SQL over a placeholder table name; our AST analyzer swaps
//! that placeholder for the dataset's query as a derived table, so the origin
//! receives one statement: `SELECT ... FROM (<dataset query>) AS <placeholder> ...`.

use std::any::Any;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::TableReference;
use datafusion::error::{DataFusionError, Result};
use datafusion::sql::sqlparser::ast::{
    Ident, Query, Statement, TableAlias, TableFactor, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::Dialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion_federation::sql::{AstAnalyzer, LogicalOptimizer, SQLTable};

/// A remote table whose rows are the result of `query` at the origin.
#[derive(Debug)]
pub(crate) struct QueryTable {
    placeholder: String,
    schema: SchemaRef,
    query: Box<Query>,
}

impl QueryTable {
    /// Parses `sql` (one query, in the origin's dialect) for the table known locally as `placeholder`.
    pub(crate) fn try_new(
        placeholder: String,
        sql: &str,
        dialect: &dyn Dialect,
        schema: SchemaRef,
    ) -> Result<Self> {
        let mut statements =
            Parser::parse_sql(dialect, sql).map_err(|e| DataFusionError::SQL(Box::new(e), None))?;
        match (statements.len(), statements.pop()) {
            (1, Some(Statement::Query(query))) => Ok(QueryTable {
                placeholder,
                schema,
                query,
            }),
            _ => Err(DataFusionError::Plan(format!(
                "a dataset query must be exactly one SELECT: {sql}"
            ))),
        }
    }
}

/// Replaces the placeholder table with the dataset query; runs after children
/// are visited, so it never descends into the query it inserts.
struct Substitute {
    placeholder: String,
    query: Box<Query>,
}

impl VisitorMut for Substitute {
    type Break = ();

    fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } = factor
        {
            let hit = name.0.len() == 1
                && name.0[0]
                    .as_ident()
                    .is_some_and(|i| i.value == self.placeholder);
            if hit {
                let alias = alias.take().unwrap_or(TableAlias {
                    explicit: true,
                    name: Ident::with_quote('"', self.placeholder.clone()),
                    columns: vec![],
                    at: None,
                });
                *factor = TableFactor::Derived {
                    lateral: false,
                    subquery: self.query.clone(),
                    alias: Some(alias),
                    sample: None,
                };
            }
        }
        ControlFlow::Continue(())
    }
}

impl SQLTable for QueryTable {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn table_reference(&self) -> TableReference {
        TableReference::bare(self.placeholder.clone())
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn logical_optimizer(&self) -> Option<LogicalOptimizer> {
        Some(Box::new(super::derived_names::name_derived_columns))
    }

    fn ast_analyzer(&self) -> Option<AstAnalyzer> {
        let mut visitor = Substitute {
            placeholder: self.placeholder.clone(),
            query: self.query.clone(),
        };
        Some(Box::new(move |mut statement: Statement| {
            let _ = VisitMut::visit(&mut statement, &mut visitor);
            Ok(statement)
        }))
    }
}
