//! What the SQL origins (PostgreSQL, SQLite) share: quoting of table names, the
//! SQL of a dataset's `filters:`, query datasets ([`QueryTable`]) and the rewrites
//! each origin's part of a plan gets before it is unparsed ([`OriginTable`]:
//! [`derived_names`], [`text_casts`]).

pub mod derived_names;
mod query_table;
mod text_casts;
pub(crate) mod write_sql;

use std::any::Any;

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::dialect::Dialect;
use datafusion_federation::sql::{
    LogicalOptimizer, RemoteTable, RemoteTableRef, SQLFederationProvider, SQLTable, SQLTableSource,
};
use datafusion_federation::FederatedTableProviderAdaptor;
use switchyard_config::DatasetSource;

use crate::{ConnectorError, Result};

pub(crate) use query_table::QueryTable;

/// A table of a SQL origin whose SQL gets [`derived_names::name_derived_columns`] and [`text_casts::restore_text_casts`].
#[derive(Debug)]
pub struct OriginTable(pub RemoteTable);

impl SQLTable for OriginTable {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn table_reference(&self) -> TableReference {
        SQLTable::table_reference(&self.0)
    }

    fn schema(&self) -> SchemaRef {
        SQLTable::schema(&self.0)
    }

    fn logical_optimizer(&self) -> Option<LogicalOptimizer> {
        Some(Box::new(|plan| {
            text_casts::restore_text_casts(derived_names::name_derived_columns(plan)?)
        }))
    }
}

/// What a SQL origin reads for a dataset: a whole table, or a query (a query
/// dataset, or a table with `filters:`).
pub(crate) enum DatasetSql {
    /// A whole origin table: pushdown names it, and its facts are the origin's.
    Table(TableReference),
    /// The rows of a query, planned as a derived table.
    Query(String),
}

impl DatasetSql {
    /// What `source` reads; `local_name` is `schema.table` as clients see it.
    pub(crate) fn of(local_name: &str, source: &DatasetSource) -> Result<DatasetSql> {
        Ok(match source {
            DatasetSource::Table { table, filters } if filters.is_empty() => {
                DatasetSql::Table(parse_table_name(table))
            }
            DatasetSource::Table { table, filters } => DatasetSql::Query(filtered_table_sql(
                &quoted(&parse_table_name(table)),
                filters,
            )),
            DatasetSource::Query(sql) => DatasetSql::Query(sql.clone()),
            DatasetSource::Pipeline { .. } => {
                return Err(ConnectorError::DataFusion(DataFusionError::Plan(format!(
                    "dataset {local_name}: pipelines are for mongodb origins"
                ))))
            }
        })
    }

    /// The statement whose result columns are the dataset's (run to describe it).
    pub(crate) fn describe_sql(&self) -> String {
        match self {
            DatasetSql::Table(reference) => format!("SELECT * FROM {}", quoted(reference)),
            DatasetSql::Query(sql) => format!("SELECT * FROM ({sql}) AS q"),
        }
    }

    /// The federated table, given the columns the origin described; `dialect`
    /// parses a query dataset's SQL.
    pub(crate) fn into_table(
        self,
        local_name: &str,
        schema: SchemaRef,
        dialect: &dyn Dialect,
        provider: &Arc<SQLFederationProvider>,
    ) -> Result<Arc<dyn TableProvider>> {
        let table: Arc<dyn SQLTable> = match self {
            DatasetSql::Table(reference) => Arc::new(OriginTable(RemoteTable::new(
                RemoteTableRef::from(reference),
                schema,
            ))),
            DatasetSql::Query(sql) => Arc::new(QueryTable::try_new(
                placeholder(local_name),
                &sql,
                dialect,
                schema,
            )?),
        };
        let source = Arc::new(SQLTableSource::new_with_table(Arc::clone(provider), table));
        Ok(Arc::new(FederatedTableProviderAdaptor::new(source)))
    }
}

/// The name federation writes for a query dataset before it is replaced by the query.
pub fn placeholder(local_name: &str) -> String {
    format!("sy_{}", local_name.replace('.', "_"))
}

/// `a` or `a.b` as a table reference (names are taken literally, not case-folded).
pub fn parse_table_name(name: &str) -> TableReference {
    match name.split_once('.') {
        Some((schema, table)) => TableReference::partial(schema, table),
        None => TableReference::bare(name),
    }
}

/// An identifier double-quoted (names are taken literally).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The reference with each part double-quoted.
pub fn quoted(reference: &TableReference) -> String {
    let q = quote_ident;
    match reference.schema() {
        Some(schema) => format!("{}.{}", q(schema), q(reference.table())),
        None => q(reference.table()),
    }
}

/// `SELECT * FROM <table> WHERE "col" = <literal> AND ...` for a dataset's `filters:`.
pub fn filtered_table_sql(
    table: &str,
    filters: &[(String, switchyard_config::FilterValue)],
) -> String {
    use switchyard_config::FilterValue;
    let conditions: Vec<String> = filters
        .iter()
        .map(|(col, v)| {
            let literal = match v {
                FilterValue::Bool(b) => b.to_string().to_uppercase(),
                FilterValue::Int(i) => i.to_string(),
                FilterValue::Float(f) => f.to_string(),
                FilterValue::Text(s) => format!("'{}'", s.replace('\'', "''")),
            };
            format!("\"{}\" = {literal}", col.replace('"', "\"\""))
        })
        .collect();
    format!("SELECT * FROM {table} WHERE {}", conditions.join(" AND "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_config::FilterValue;

    #[test]
    fn filters_are_quoted_literals() {
        let sql = filtered_table_sql(
            "\"public\".\"t\"",
            &[
                ("status".into(), FilterValue::Int(1)),
                ("name".into(), FilterValue::Text("o'brien".into())),
            ],
        );
        assert_eq!(
            sql,
            "SELECT * FROM \"public\".\"t\" WHERE \"status\" = 1 AND \"name\" = 'o''brien'"
        );
    }
}
