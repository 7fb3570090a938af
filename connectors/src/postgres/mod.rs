//! PostgreSQL origins: a pool of our own ([`pool`]), the federation executor that
//! runs each origin's part of a plan as one SQL statement ([`exec`]), types and
//! rows as Arrow ([`types`], [`rows`]) and the origin's catalog facts ([`facts`]).

mod exec;
mod facts;
mod pool;
pub mod rows;
pub mod types;

use std::sync::Arc;
use switchyard_sqlstate::SqlState;

use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect as PgParseDialect;
use datafusion_federation::sql::{
    RemoteTable, RemoteTableRef, SQLFederationProvider, SQLTableSource,
};
use datafusion_federation::FederatedTableProviderAdaptor;
use switchyard_config::{Dataset, DatasetSource, PostgresOrigin};

pub use exec::PgExecutor;
pub use pool::PgPool;

use crate::facts::{Resolve, TableFacts};
use crate::origin::Origin;
use crate::sql::{
    filtered_table_sql, parse_table_name, placeholder, quoted, OriginTable, QueryTable,
};
use crate::{ConnectorError, Result};

/// One PostgreSQL origin: its pool and federation provider.
#[derive(Debug)]
pub struct PostgresConnector {
    pool: Arc<PgPool>,
    provider: Arc<SQLFederationProvider>,
}

impl PostgresConnector {
    /// A connector for origin `name`; nothing is opened until a table is first used.
    pub fn new(name: &str, settings: PostgresOrigin) -> Result<Self> {
        let pool = PgPool::new(name, settings)?;
        let provider = Arc::new(SQLFederationProvider::new(Arc::new(PgExecutor::new(
            Arc::clone(&pool),
        ))));
        Ok(PostgresConnector { pool, provider })
    }

    /// The connection pool.
    pub fn pool(&self) -> &Arc<PgPool> {
        &self.pool
    }

    /// A federated table for a dataset; `local_name` is `schema.table` as clients see it.
    async fn federated(
        &self,
        local_name: &str,
        source: &DatasetSource,
    ) -> Result<Arc<dyn TableProvider>> {
        let table: Arc<dyn datafusion_federation::sql::SQLTable> = match source {
            DatasetSource::Table { table, filters } if filters.is_empty() => {
                let reference = parse_table_name(table);
                let schema = self
                    .pool
                    .describe(&format!("SELECT * FROM {}", quoted(&reference)))
                    .await
                    .map_err(|e| match e {
                        ConnectorError::Origin { code, .. }
                            if code == SqlState::UNDEFINED_TABLE =>
                        {
                            ConnectorError::NotFound {
                                origin: self.pool.origin().to_string(),
                                object: format!("table {table}"),
                            }
                        }
                        other => other,
                    })?;
                Arc::new(OriginTable(RemoteTable::new(
                    RemoteTableRef::from(reference),
                    schema,
                )))
            }
            DatasetSource::Table { table, filters } => {
                let sql = filtered_table_sql(&quoted(&parse_table_name(table)), filters);
                self.query_table(local_name, &sql).await?
            }
            DatasetSource::Query(sql) => self.query_table(local_name, sql).await?,
            DatasetSource::Pipeline { .. } => {
                return Err(ConnectorError::DataFusion(DataFusionError::Plan(format!(
                    "dataset {local_name}: pipelines are for mongodb origins"
                ))))
            }
        };
        let source = Arc::new(SQLTableSource::new_with_table(
            Arc::clone(&self.provider),
            table,
        ));
        Ok(Arc::new(FederatedTableProviderAdaptor::new(source)))
    }

    async fn query_table(
        &self,
        local_name: &str,
        sql: &str,
    ) -> Result<Arc<dyn datafusion_federation::sql::SQLTable>> {
        let schema = self
            .pool
            .describe(&format!("SELECT * FROM ({sql}) AS q"))
            .await?;
        Ok(Arc::new(QueryTable::try_new(
            placeholder(local_name),
            sql,
            &PgParseDialect {},
            schema,
        )?))
    }
}

#[async_trait]
impl Origin for PostgresConnector {
    fn name(&self) -> &str {
        self.pool.origin()
    }

    async fn table(&self, dataset: &Dataset) -> Result<Arc<dyn TableProvider>> {
        self.federated(&dataset.qualified_name(), &dataset.source)
            .await
    }

    async fn facts(&self, dataset: &Dataset, resolve: Resolve<'_>) -> Result<Option<TableFacts>> {
        // Only a whole origin table has the origin's keys and indexes.
        let DatasetSource::Table { table, filters } = &dataset.source else {
            return Ok(None);
        };
        if !filters.is_empty() {
            return Ok(None);
        }
        let reference = parse_table_name(table);
        Ok(Some(facts::fetch(&self.pool, &reference, resolve).await?))
    }
}
