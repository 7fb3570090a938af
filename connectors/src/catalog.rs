//! Exposes datasets to the planner: one lazily-resolved schema per dataset schema name.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::prelude::SessionContext;
use switchyard_config::{Config, Dataset, DatasetSource, OriginKind};
use tokio::sync::Mutex;

use crate::facts::TableFacts;
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
    /// The origin's catalog facts, read on first use (a failure is not kept).
    facts: tokio::sync::OnceCell<Option<Arc<TableFacts>>>,
}

/// Origin table (origin, schema, table) → the dataset (schema, name) exposing it whole.
type Exposed = BTreeMap<(String, String, String), (String, String)>;

/// A schema whose tables live at origins.
#[derive(Debug)]
pub struct OriginSchema {
    tables: BTreeMap<String, Arc<Entry>>,
    exposed: Arc<Exposed>,
}

impl OriginSchema {
    /// The origin's catalog facts about dataset `name` (keys, indexes, NOT NULL,
    /// defaults), read once. `None` for datasets that are not a whole PostgreSQL table.
    pub async fn facts(&self, name: &str) -> Result<Option<Arc<TableFacts>>> {
        let Some(entry) = self.tables.get(name) else {
            return Ok(None);
        };
        let facts = entry
            .facts
            .get_or_try_init(|| async {
                let (Connector::Postgres(pg), DatasetSource::Table { table, filters }) =
                    (entry.connector.as_ref(), &entry.dataset.source)
                else {
                    return Ok(None);
                };
                if !filters.is_empty() {
                    return Ok(None);
                }
                let origin = entry.dataset.origin.clone();
                let exposed = Arc::clone(&self.exposed);
                let resolve = move |schema: &str, table: &str| {
                    exposed
                        .get(&(origin.clone(), schema.to_string(), table.to_string()))
                        .cloned()
                };
                let reference = crate::postgres::parse_table_name(table);
                let facts = crate::facts::fetch(pg.pool(), &reference, &resolve).await?;
                tracing::debug!(table = %entry.dataset.qualified_name(), "read catalog facts");
                Ok::<_, ConnectorError>(Some(Arc::new(facts)))
            })
            .await?;
        Ok(facts.clone())
    }
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
                facts: tokio::sync::OnceCell::new(),
            }),
        );
    }
    let mut exposed = Exposed::new();
    for dataset in &config.datasets {
        if let DatasetSource::Table { table, filters } = &dataset.source {
            if filters.is_empty() {
                let reference = crate::postgres::parse_table_name(table);
                let schema = reference.schema().unwrap_or("public").to_string();
                exposed
                    .entry((
                        dataset.origin.clone(),
                        schema,
                        reference.table().to_string(),
                    ))
                    .or_insert_with(|| (dataset.schema.clone(), dataset.name.clone()));
            }
        }
    }
    let exposed = Arc::new(exposed);

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
                facts: tokio::sync::OnceCell::new(),
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
        let exposed = Arc::clone(&exposed);
        catalog.register_schema(&schema, Arc::new(OriginSchema { tables, exposed }))?;
    }
    Ok(origins)
}
