//! Exposes datasets to the planner: one lazily-resolved schema per dataset schema name.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::prelude::SessionContext;
use switchyard_config::{Config, Dataset, DatasetSource, OriginKind};
use tokio::sync::Mutex;

use crate::local::{LocalStore, LOCAL_SCHEMA};
use crate::mongo::MongoConnector;
use crate::postgres::PostgresConnector;
use crate::sqlite::SqliteConnector;
use crate::{files, ConnectorError, Result};

/// How one origin is reached.
#[derive(Debug)]
pub enum Connector {
    /// A PostgreSQL database.
    Postgres(PostgresConnector),
    /// A SQLite file (also the local store).
    Sqlite(SqliteConnector),
    /// A MongoDB database.
    Mongo(MongoConnector),
    /// A folder of files.
    Files {
        /// Origin name.
        origin: String,
        /// The folder.
        path: std::path::PathBuf,
    },
}

impl Connector {
    async fn table(&self, local_name: &str, dataset: &Dataset) -> Result<Arc<dyn TableProvider>> {
        match self {
            Connector::Postgres(pg) => pg.table(local_name, &dataset.source).await,
            Connector::Sqlite(sqlite) => sqlite.table(local_name, &dataset.source).await,
            Connector::Mongo(mongo) => {
                mongo
                    .table(local_name, &dataset.source, &dataset.columns)
                    .await
            }
            Connector::Files { origin, path } => match &dataset.source {
                DatasetSource::Table { table, filters } if filters.is_empty() => {
                    let state = SessionContext::new().state();
                    files::table(&state, origin, path, table).await
                }
                _ => Err(ConnectorError::DataFusion(DataFusionError::NotImplemented(format!(
                    "dataset {local_name}: filters and queries are not supported on files origins yet"
                )))),
            },
        }
    }
}

/// Every origin connector, by origin name.
#[derive(Debug, Default, Clone)]
pub struct Origins {
    connectors: BTreeMap<String, Arc<Connector>>,
}

impl Origins {
    /// The connector of an origin.
    pub fn get(&self, name: &str) -> Option<&Arc<Connector>> {
        self.connectors.get(name)
    }
}

/// A table entry: resolved on first use, retried after failures.
#[derive(Debug)]
struct Entry {
    dataset: Dataset,
    connector: Arc<Connector>,
    resolved: Mutex<Option<Arc<dyn TableProvider>>>,
}

/// A schema whose tables live at origins.
#[derive(Debug)]
pub struct OriginSchema {
    tables: BTreeMap<String, Arc<Entry>>,
}

#[async_trait]
impl SchemaProvider for OriginSchema {
    fn table_names(&self) -> Vec<String> {
        self.tables.keys().cloned().collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let Some(entry) = self.tables.get(name) else {
            return Ok(None);
        };
        let mut resolved = entry.resolved.lock().await;
        if let Some(table) = resolved.as_ref() {
            return Ok(Some(Arc::clone(table)));
        }
        let local_name = entry.dataset.qualified_name();
        let table = entry
            .connector
            .table(&local_name, &entry.dataset)
            .await
            .map_err(DataFusionError::from)?;
        tracing::debug!(table = %local_name, origin = %entry.dataset.origin, "resolved dataset");
        *resolved = Some(Arc::clone(&table));
        Ok(Some(table))
    }

    async fn table_type(
        &self,
        name: &str,
    ) -> DfResult<Option<datafusion::logical_expr::TableType>> {
        // Every dataset is a base table: known without reaching the origin, so
        // listings work while an origin is down.
        Ok(self
            .tables
            .contains_key(name)
            .then_some(datafusion::logical_expr::TableType::Base))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.contains_key(name)
    }
}

/// Registers every dataset of `config` (and the local store's tables under `local`)
/// in the default catalog of `ctx`. Nothing is connected yet.
pub fn install(ctx: &SessionContext, config: &Config) -> Result<Origins> {
    let mut origins = Origins::default();
    for origin in &config.origins {
        let connector = match &origin.kind {
            OriginKind::Postgres(pg) => {
                Connector::Postgres(PostgresConnector::new(&origin.name, pg.clone()))
            }
            OriginKind::Sqlite { path } => {
                Connector::Sqlite(SqliteConnector::new(&origin.name, path))
            }
            OriginKind::Mongodb(m) => {
                Connector::Mongo(MongoConnector::new(&origin.name, m.clone()))
            }
            OriginKind::Files { path } => Connector::Files {
                origin: origin.name.clone(),
                path: path.clone(),
            },
        };
        origins
            .connectors
            .insert(origin.name.clone(), Arc::new(connector));
    }
    let mut schemas: BTreeMap<String, BTreeMap<String, Arc<Entry>>> = BTreeMap::new();
    for dataset in &config.datasets {
        let connector = Arc::clone(
            origins
                .get(&dataset.origin)
                .expect("config checked the origin"),
        );
        schemas.entry(dataset.schema.clone()).or_default().insert(
            dataset.name.clone(),
            Arc::new(Entry {
                dataset: dataset.clone(),
                connector,
                resolved: Mutex::new(None),
            }),
        );
    }

    let store = LocalStore::open(&config.local.path)?;
    let local = Arc::new(Connector::Sqlite(store.connector()));
    let Connector::Sqlite(local_sqlite) = local.as_ref() else {
        unreachable!()
    };
    for name in local_sqlite.table_names()? {
        let dataset = Dataset {
            schema: LOCAL_SCHEMA.into(),
            name: name.clone(),
            origin: LOCAL_SCHEMA.into(),
            source: DatasetSource::Table {
                table: name.clone(),
                filters: vec![],
            },
            line: None,
            columns: vec![],
        };
        schemas.entry(LOCAL_SCHEMA.into()).or_default().insert(
            name,
            Arc::new(Entry {
                dataset,
                connector: Arc::clone(&local),
                resolved: Mutex::new(None),
            }),
        );
    }
    origins.connectors.insert(LOCAL_SCHEMA.into(), local);

    let catalog_name = ctx
        .state()
        .config()
        .options()
        .catalog
        .default_catalog
        .clone();
    let catalog = ctx
        .catalog(&catalog_name)
        .expect("the default catalog exists");
    for (schema, tables) in schemas {
        catalog.register_schema(&schema, Arc::new(OriginSchema { tables }))?;
    }
    Ok(origins)
}
