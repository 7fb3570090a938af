//! PostgreSQL origins: a pool of our own ([`pool`]), the federation executor that
//! runs each origin's part of a plan as one SQL statement ([`exec`]), types and
//! rows as Arrow ([`types`], [`rows`]), the origin's catalog facts ([`facts`]) and
//! its change feed by logical replication ([`live`]).

mod exec;
mod facts;
pub mod live;
mod pool;
pub mod rows;
pub mod types;
mod write;

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect as PgParseDialect;
use datafusion_federation::sql::SQLFederationProvider;
use switchyard_config::{Dataset, DatasetSource, PostgresOrigin};
use switchyard_sqlstate::SqlState;

pub use exec::PgExecutor;
pub(crate) use exec::{bytea_literal, timestamptz_literal};
pub use pool::PgPool;
pub use write::PgWrites;

use crate::facts::{Resolve, TableFacts};
use crate::origin::Origin;
use crate::sql::{parse_table_name, DatasetSql};
use crate::{ConnectorError, Result};

/// One PostgreSQL origin: its pool and federation provider.
#[derive(Debug)]
pub struct PostgresConnector {
    pool: Arc<PgPool>,
    provider: Arc<SQLFederationProvider>,
    feed: Arc<live::PgFeed>,
    writes: Arc<PgWrites>,
}

impl PostgresConnector {
    /// A connector for origin `name`; nothing is opened until a table is first used.
    pub fn new(name: &str, settings: PostgresOrigin) -> Result<Self> {
        let pool = PgPool::new(name, settings)?;
        let provider = Arc::new(SQLFederationProvider::new(Arc::new(PgExecutor::new(
            Arc::clone(&pool),
        ))));
        let feed = Arc::new(live::PgFeed::new(Arc::clone(&pool)));
        let writes = Arc::new(PgWrites::new(Arc::clone(&pool)));
        Ok(PostgresConnector {
            pool,
            provider,
            feed,
            writes,
        })
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
        let wanted = DatasetSql::of(local_name, source)?;
        let schema = self
            .pool
            .describe(&wanted.describe_sql())
            .await
            .map_err(|e| match (e, &wanted) {
                (ConnectorError::Origin { code, .. }, DatasetSql::Table(reference))
                    if code == SqlState::UNDEFINED_TABLE =>
                {
                    ConnectorError::NotFound {
                        origin: self.pool.origin().to_string(),
                        object: format!("table {reference}"),
                    }
                }
                (other, _) => other,
            })?;
        wanted.into_table(local_name, schema, &PgParseDialect {}, &self.provider)
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

    fn changes(&self) -> Option<crate::changes::SharedFeed> {
        Some(Arc::clone(&self.feed) as crate::changes::SharedFeed)
    }

    fn writes(&self) -> Option<crate::write::SharedWrites> {
        Some(Arc::clone(&self.writes) as crate::write::SharedWrites)
    }
}
