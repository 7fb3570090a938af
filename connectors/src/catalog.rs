//! Exposes datasets to the planner: one lazily-resolved schema per dataset schema name.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::prelude::SessionContext;
use switchyard_config::{Config, Dataset, DatasetSource, Mode};
use tokio::sync::Mutex;

use crate::facts::TableFacts;
use crate::local::{LocalStore, LOCAL_SCHEMA};
use crate::origin::Origin;
use crate::{ConnectorError, Result};

/// Every origin, by name (the local store under `local`).
#[derive(Debug, Default, Clone)]
pub struct Origins {
    origins: BTreeMap<String, Arc<dyn Origin>>,
    /// The local store's tables, as datasets of schema `local`.
    local: Vec<Dataset>,
    store: Option<Arc<LocalStore>>,
    notes: Arc<CopyNotes>,
}

impl Origins {
    /// The origin named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Origin>> {
        self.origins.get(name)
    }

    /// The local store's table `name` as a dataset (schema `local`).
    pub fn local_dataset(&self, name: &str) -> Option<&Dataset> {
        self.local.iter().find(|d| d.name == name)
    }

    /// The local store (set by [`install`]).
    pub fn store(&self) -> Option<&Arc<LocalStore>> {
        self.store.as_ref()
    }

    /// Why materialized datasets have no copy yet, as their keeper last said.
    pub fn copy_notes(&self) -> &Arc<CopyNotes> {
        &self.notes
    }
}

/// One line per materialized dataset saying why it has no copy to read yet
/// (`snapshotting, 1200 rows copied`, `origin down: ...`), kept by whoever takes
/// the copies and shown to a statement that reads the dataset meanwhile.
#[derive(Debug, Default)]
pub struct CopyNotes(std::sync::RwLock<BTreeMap<String, String>>);

impl CopyNotes {
    /// Sets the note for `dataset` (`schema.name`).
    pub fn set(&self, dataset: &str, note: String) {
        if let Ok(mut notes) = self.0.write() {
            notes.insert(dataset.to_string(), note);
        }
    }

    /// The note for `dataset`.
    pub fn get(&self, dataset: &str) -> String {
        self.0
            .read()
            .ok()
            .and_then(|n| n.get(dataset).cloned())
            .unwrap_or_else(|| "it is not copied yet (is Switchyard materializing it?)".into())
    }
}

/// A table entry: resolved on first use, retried after failures.
#[derive(Debug)]
struct Entry {
    dataset: Dataset,
    origin: Arc<dyn Origin>,
    resolved: Mutex<Option<Arc<dyn TableProvider>>>,
    /// The origin's catalog facts, read on first use (a failure is not kept).
    facts: tokio::sync::OnceCell<Option<Arc<TableFacts>>>,
}

/// Origin table (origin, schema, table) → the dataset (schema, name) exposing it whole.
type Exposed = BTreeMap<(String, String, String), (String, String)>;

/// A schema whose tables live at origins (or, materialized, in the local store).
#[derive(Debug)]
pub struct OriginSchema {
    tables: BTreeMap<String, Arc<Entry>>,
    exposed: Arc<Exposed>,
    store: Arc<LocalStore>,
    notes: Arc<CopyNotes>,
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
                let origin = entry.dataset.origin.clone();
                let exposed = Arc::clone(&self.exposed);
                let resolve = move |schema: &str, table: &str| {
                    exposed
                        .get(&(origin.clone(), schema.to_string(), table.to_string()))
                        .cloned()
                };
                let facts = entry.origin.facts(&entry.dataset, &resolve).await?;
                if facts.is_some() {
                    tracing::debug!(table = %entry.dataset.qualified_name(), "read catalog facts");
                }
                Ok::<_, ConnectorError>(facts.map(Arc::new))
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
        if matches!(entry.dataset.mode, Mode::Materialize { .. }) {
            // Read from the current copy, never the origin; not kept, as a
            // refresh may bring a new schema.
            let local_name = entry.dataset.qualified_name();
            let why = self.notes.get(&local_name);
            let table = self
                .store
                .copy_table(&entry.dataset, &why)
                .map_err(DataFusionError::from)?;
            return Ok(Some(table));
        }
        let mut resolved = entry.resolved.lock().await;
        if let Some(table) = resolved.as_ref() {
            return Ok(Some(Arc::clone(table)));
        }
        let local_name = entry.dataset.qualified_name();
        let table = entry
            .origin
            .table(&entry.dataset)
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
        origins
            .origins
            .insert(origin.name.clone(), crate::origin::open(origin)?);
    }
    let mut schemas: BTreeMap<String, BTreeMap<String, Arc<Entry>>> = BTreeMap::new();
    for dataset in &config.datasets {
        let origin = Arc::clone(
            origins
                .get(&dataset.origin)
                .expect("config checked the origin"),
        );
        schemas.entry(dataset.schema.clone()).or_default().insert(
            dataset.name.clone(),
            Arc::new(Entry {
                dataset: dataset.clone(),
                origin,
                resolved: Mutex::new(None),
                facts: tokio::sync::OnceCell::new(),
            }),
        );
    }
    let mut exposed = Exposed::new();
    for dataset in &config.datasets {
        if let DatasetSource::Table { table, filters } = &dataset.source {
            if filters.is_empty() {
                let reference = crate::sql::parse_table_name(table);
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

    let store = Arc::new(LocalStore::from_config(&config.local)?);
    let local_sqlite = Arc::new(store.connector());
    let local: Arc<dyn Origin> = Arc::clone(&local_sqlite) as Arc<dyn Origin>;
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
            mode: switchyard_config::Mode::Federate,
        };
        origins.local.push(dataset.clone());
        schemas.entry(LOCAL_SCHEMA.into()).or_default().insert(
            name,
            Arc::new(Entry {
                dataset,
                origin: Arc::clone(&local),
                resolved: Mutex::new(None),
                facts: tokio::sync::OnceCell::new(),
            }),
        );
    }
    origins.origins.insert(LOCAL_SCHEMA.into(), local);
    origins.store = Some(Arc::clone(&store));

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
        catalog.register_schema(
            &schema,
            Arc::new(OriginSchema {
                tables,
                exposed,
                store: Arc::clone(&store),
                notes: Arc::clone(&origins.notes),
            }),
        )?;
    }
    Ok(origins)
}
