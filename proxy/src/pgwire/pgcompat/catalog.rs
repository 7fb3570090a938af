//! The catalog one session sees: the shared catalog, with listings cut to what the
//! logged-in user may read.
//!
//! Planning still resolves every table (a denied one must fail with 42501 naming
//! it, not "does not exist"), but `\dt`, `SHOW TABLES`, information_schema and
//! pg_catalog list only the user's tables; pg_catalog (psql's `\d`, pgjdbc's and
//! SQLAlchemy's metadata) shows their columns as the user reads them: denied
//! columns left out, hashed ones as text.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::information_schema::InformationSchemaProvider;
use datafusion::catalog::{CatalogProvider, CatalogProviderList, SchemaProvider};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::SessionState;
use datafusion::execution::SessionStateBuilder;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::catalog_info::CatalogInfo;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::{
    PgCatalogSchemaProvider, PgCatalogStaticTables,
};
use switchyard_safety::{Pipeline, Principal};

/// Who the session is, once logged in.
#[derive(Debug, Clone)]
struct Viewer {
    pipeline: Arc<Pipeline>,
    user: Arc<OnceLock<String>>,
}

impl Viewer {
    fn principal(&self) -> Principal {
        self.pipeline
            .principal(self.user.get().map(String::as_str).unwrap_or_default())
    }

    fn visible(&self, schema: &str, table: &str) -> bool {
        self.pipeline
            .policy()
            .visible(&self.principal(), schema, table)
    }
}

/// A session state whose catalog listings follow `user`'s grants.
pub fn session_state(
    base: &SessionState,
    catalog: &str,
    pipeline: Arc<Pipeline>,
    user: Arc<OnceLock<String>>,
    static_tables: Arc<PgCatalogStaticTables>,
    definitions: Arc<crate::pgwire::pgcompat::catalog_facts::Definitions>,
    database: Arc<OnceLock<String>>,
) -> SessionState {
    let viewer = Viewer { pipeline, user };
    let shared = Arc::clone(base.catalog_list());
    let info = UserCatalogInfo {
        list: Arc::clone(&shared),
        viewer: viewer.clone(),
    };
    let pg_catalog: Arc<dyn SchemaProvider> = Arc::new(
        PgCatalogSchemaProvider::try_new(info, static_tables, EmptyContextProvider)
            .expect("pg_catalog over a catalog list"),
    );
    // Keys, indexes, defaults and NOT NULL from the origins, over the same listing.
    let pg_catalog: Arc<dyn SchemaProvider> =
        Arc::new(crate::pgwire::pgcompat::catalog_facts::FactsCatalog::new(
            pg_catalog,
            Arc::clone(&shared),
            catalog,
            definitions,
            database,
        ));
    let views: Arc<dyn CatalogProviderList> = Arc::new(ViewList {
        shared: Arc::clone(&shared),
        viewer: viewer.clone(),
    });
    let information_schema: Arc<dyn SchemaProvider> = Arc::new(
        InformationSchemaProvider::new(Arc::clone(&views))
            .with_table_functions(base.table_functions().clone()),
    );
    let information_schema: Arc<dyn SchemaProvider> = Arc::new(
        crate::pgwire::pgcompat::information_schema::PgInformationSchema::new(
            information_schema,
            views,
            Arc::clone(&shared),
        ),
    );
    let list = SessionCatalogList {
        name: catalog.to_string(),
        catalog: shared.catalog(catalog).map(|base| {
            Arc::new(SessionCatalog {
                base,
                pg_catalog,
                information_schema,
                viewer,
            }) as Arc<dyn CatalogProvider>
        }),
        shared,
    };
    // information_schema comes from our catalog (built over the user's view of the
    // tables), not from DataFusion's, which would read the planning catalog.
    let config = base.config().clone().with_information_schema(false);
    SessionStateBuilder::new_from_existing(base.clone())
        .with_config(config)
        .with_catalog_list(Arc::new(list))
        .build()
}

#[derive(Debug)]
struct SessionCatalogList {
    name: String,
    catalog: Option<Arc<dyn CatalogProvider>>,
    shared: Arc<dyn CatalogProviderList>,
}

impl CatalogProviderList for SessionCatalogList {
    fn register_catalog(
        &self,
        name: String,
        catalog: Arc<dyn CatalogProvider>,
    ) -> Option<Arc<dyn CatalogProvider>> {
        self.shared.register_catalog(name, catalog)
    }

    fn catalog_names(&self) -> Vec<String> {
        CatalogProviderList::catalog_names(self.shared.as_ref())
    }

    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        if name == self.name {
            self.catalog.clone()
        } else {
            self.shared.catalog(name)
        }
    }
}

#[derive(Debug)]
struct SessionCatalog {
    base: Arc<dyn CatalogProvider>,
    pg_catalog: Arc<dyn SchemaProvider>,
    information_schema: Arc<dyn SchemaProvider>,
    viewer: Viewer,
}

impl CatalogProvider for SessionCatalog {
    fn schema_names(&self) -> Vec<String> {
        let mut names = self.base.schema_names();
        if !names.iter().any(|n| n == "information_schema") {
            names.push("information_schema".into());
        }
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if name == "pg_catalog" {
            return Some(Arc::clone(&self.pg_catalog));
        }
        if name == "information_schema" {
            return Some(Arc::clone(&self.information_schema));
        }
        let inner = self.base.schema(name)?;
        Some(Arc::new(ListedSchema {
            inner,
            name: name.to_string(),
            viewer: self.viewer.clone(),
            describe: false,
        }))
    }

    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> Result<Option<Arc<dyn SchemaProvider>>> {
        self.base.register_schema(name, schema)
    }
}

/// A schema whose listing holds only the viewer's tables. For planning (`describe`
/// off) lookups are unchanged; for information_schema they give the viewer's
/// description of the table (its columns as the viewer reads them) and nothing for
/// tables the viewer may not read.
#[derive(Debug)]
struct ListedSchema {
    inner: Arc<dyn SchemaProvider>,
    name: String,
    viewer: Viewer,
    describe: bool,
}

#[async_trait]
impl SchemaProvider for ListedSchema {
    fn table_names(&self) -> Vec<String> {
        self.inner
            .table_names()
            .into_iter()
            .filter(|t| self.viewer.visible(&self.name, t))
            .collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        if !self.describe {
            return self.inner.table(name).await;
        }
        if !self.viewer.visible(&self.name, name) {
            return Ok(None);
        }
        // A listing (psql \dt, pg_catalog, information_schema) must not fail because
        // one dataset cannot be resolved right now (origin down, empty collection):
        // that table is left out and the reason logged; querying it reports the error.
        let table = match self.inner.table(name).await {
            Ok(Some(table)) => table,
            Ok(None) => return Ok(None),
            Err(e) => {
                tracing::warn!(schema = %self.name, table = %name, error = %e, "left out of catalog listing");
                return Ok(None);
            }
        };
        let columns = self.viewer.pipeline.policy().visible_columns(
            &self.viewer.principal(),
            &self.name,
            name,
            &table.schema(),
        );
        Ok(Some(Arc::new(Described {
            columns,
            kind: table.table_type(),
        })))
    }

    async fn table_type(&self, name: &str) -> Result<Option<TableType>> {
        self.inner.table_type(name).await
    }

    fn table_exist(&self, name: &str) -> bool {
        (!self.describe || self.viewer.visible(&self.name, name)) && self.inner.table_exist(name)
    }
}

/// The catalogs as the viewer sees them, for information_schema only: their tables
/// are the viewer's, with the viewer's columns; they are never scanned.
#[derive(Debug)]
struct ViewList {
    shared: Arc<dyn CatalogProviderList>,
    viewer: Viewer,
}

impl CatalogProviderList for ViewList {
    fn register_catalog(
        &self,
        _name: String,
        _catalog: Arc<dyn CatalogProvider>,
    ) -> Option<Arc<dyn CatalogProvider>> {
        None
    }

    fn catalog_names(&self) -> Vec<String> {
        CatalogProviderList::catalog_names(self.shared.as_ref())
    }

    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        let inner = self.shared.catalog(name)?;
        Some(Arc::new(ViewCatalog {
            inner,
            viewer: self.viewer.clone(),
        }))
    }
}

#[derive(Debug)]
struct ViewCatalog {
    inner: Arc<dyn CatalogProvider>,
    viewer: Viewer,
}

impl CatalogProvider for ViewCatalog {
    fn schema_names(&self) -> Vec<String> {
        // information_schema itself is not listed in its own tables.
        self.inner
            .schema_names()
            .into_iter()
            .filter(|s| s != "information_schema")
            .collect()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        let inner = self.inner.schema(name)?;
        Some(Arc::new(ListedSchema {
            inner,
            name: name.to_string(),
            viewer: self.viewer.clone(),
            describe: true,
        }))
    }
}

/// A table as information_schema describes it: columns and kind, no data.
#[derive(Debug)]
struct Described {
    columns: SchemaRef,
    kind: TableType,
}

#[async_trait]
impl TableProvider for Described {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.columns)
    }

    fn table_type(&self) -> TableType {
        self.kind
    }

    async fn scan(
        &self,
        _state: &dyn datafusion::catalog::Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[datafusion::prelude::Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        Err(DataFusionError::Internal(
            "a catalog description is not scanned".into(),
        ))
    }
}

/// What pg_catalog reads: the viewer's tables, with their columns as the viewer reads them.
#[derive(Debug, Clone)]
struct UserCatalogInfo {
    list: Arc<dyn CatalogProviderList>,
    viewer: Viewer,
}

#[async_trait]
impl CatalogInfo for UserCatalogInfo {
    async fn catalog_names(&self) -> Result<Vec<String>> {
        CatalogInfo::catalog_names(&self.list).await
    }

    async fn schema_names(&self, catalog: &str) -> Result<Option<Vec<String>>> {
        // pg_namespace lists information_schema, as PostgreSQL's does (pgjdbc's getSchemas).
        Ok(CatalogInfo::schema_names(&self.list, catalog)
            .await?
            .map(|mut names| {
                if !names.iter().any(|n| n == "information_schema") {
                    names.push("information_schema".into());
                }
                names
            }))
    }

    async fn table_names(&self, catalog: &str, schema: &str) -> Result<Option<Vec<String>>> {
        Ok(CatalogInfo::table_names(&self.list, catalog, schema)
            .await?
            .map(|names| {
                names
                    .into_iter()
                    .filter(|t| self.viewer.visible(schema, t))
                    .collect()
            }))
    }

    async fn table_schema(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Result<Option<SchemaRef>> {
        if !self.viewer.visible(schema, table) {
            return Ok(None);
        }
        let columns = match CatalogInfo::table_schema(&self.list, catalog, schema, table).await {
            Ok(columns) => columns,
            Err(e) => {
                tracing::warn!(%schema, %table, error = %e, "left out of information_schema");
                None
            }
        };
        Ok(columns.map(|columns| {
            self.viewer.pipeline.policy().visible_columns(
                &self.viewer.principal(),
                schema,
                table,
                &columns,
            )
        }))
    }

    async fn table_type(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Result<Option<TableType>> {
        CatalogInfo::table_type(&self.list, catalog, schema, table).await
    }
}
