//! information_schema as PostgreSQL fills it, over DataFusion's: `columns` names
//! types as PostgreSQL does (`integer`, `character varying`, `ARRAY`, with
//! `udt_name`), not as Arrow does (`Int32`, `Utf8`), and takes NOT NULL and defaults
//! from the origin where it knows them (Grafana, Metabase and DBeaver read these).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{CatalogProviderList, SchemaProvider, Session};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::{collect, ExecutionPlan};
use switchyard_connectors::catalog::OriginSchema;
use switchyard_connectors::facts::TableFacts;

use super::column_type::{self, ColumnType};

/// DataFusion's information_schema with [`Columns`] in place of its `columns`.
#[derive(Debug)]
pub struct PgInformationSchema {
    inner: Arc<dyn SchemaProvider>,
    /// The viewer's catalogs (the column types information_schema lists).
    views: Arc<dyn CatalogProviderList>,
    /// The planning catalogs (whose origin schemas hold NOT NULL and defaults).
    shared: Arc<dyn CatalogProviderList>,
}

impl PgInformationSchema {
    /// `inner` is DataFusion's information_schema over `views`.
    pub fn new(
        inner: Arc<dyn SchemaProvider>,
        views: Arc<dyn CatalogProviderList>,
        shared: Arc<dyn CatalogProviderList>,
    ) -> Self {
        PgInformationSchema {
            inner,
            views,
            shared,
        }
    }
}

#[async_trait]
impl SchemaProvider for PgInformationSchema {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let inner = self.inner.table(name).await?;
        match (name.eq_ignore_ascii_case("columns"), inner) {
            (true, Some(inner)) => Ok(Some(Arc::new(Columns {
                schema: with_udt(&inner.schema()),
                inner,
                views: Arc::clone(&self.views),
                shared: Arc::clone(&self.shared),
            }))),
            (_, inner) => Ok(inner),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// `schema` with `udt_schema` and `udt_name` added.
fn with_udt(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("udt_schema", DataType::Utf8, true));
    fields.push(Field::new("udt_name", DataType::Utf8, true));
    Arc::new(Schema::new(fields))
}

/// information_schema.columns with PostgreSQL's type names.
#[derive(Debug)]
struct Columns {
    schema: SchemaRef,
    inner: Arc<dyn TableProvider>,
    views: Arc<dyn CatalogProviderList>,
    shared: Arc<dyn CatalogProviderList>,
}

/// One table's column types and facts, looked up once per scan.
struct Described {
    types: HashMap<String, ColumnType>,
    facts: Option<Arc<TableFacts>>,
}

impl Columns {
    async fn describe(&self, catalog: &str, schema: &str, table: &str) -> Described {
        let mut types = HashMap::new();
        if let Some(s) = self.views.catalog(catalog).and_then(|c| c.schema(schema)) {
            if let Ok(Some(t)) = s.table(table).await {
                for f in t.schema().fields() {
                    types.insert(f.name().clone(), column_type::of(f));
                }
            }
        }
        let mut facts = None;
        if let Some(s) = self.shared.catalog(catalog).and_then(|c| c.schema(schema)) {
            if let Some(origin) = (s.as_ref() as &dyn std::any::Any).downcast_ref::<OriginSchema>()
            {
                // A listing must not fail because an origin is down.
                facts = origin.facts(table).await.ok().flatten();
            }
        }
        Described { types, facts }
    }

    async fn rows(&self, state: &dyn Session) -> Result<RecordBatch> {
        let plan = self.inner.scan(state, None, &[], None).await?;
        let batches = collect(plan, state.task_ctx()).await?;
        let batch = datafusion::arrow::compute::concat_batches(&self.inner.schema(), &batches)?;
        let text = |name: &str| -> Result<StringArray> {
            Ok(batch
                .column_by_name(name)
                .map(|c| c.as_string::<i32>().clone())
                .unwrap_or_else(|| StringArray::new_null(batch.num_rows())))
        };
        let (catalogs, schemas, tables, names) = (
            text("table_catalog")?,
            text("table_schema")?,
            text("table_name")?,
            text("column_name")?,
        );
        let mut described: HashMap<(String, String, String), Described> = HashMap::new();
        let mut data_type = Vec::with_capacity(batch.num_rows());
        let mut max_length = Vec::with_capacity(batch.num_rows());
        let mut nullable = Vec::with_capacity(batch.num_rows());
        let mut default = Vec::with_capacity(batch.num_rows());
        let mut udt_schema = Vec::with_capacity(batch.num_rows());
        let mut udt_name = Vec::with_capacity(batch.num_rows());
        let old_type = text("data_type")?;
        let old_nullable = text("is_nullable")?;
        let old_default = text("column_default")?;
        let old_length = batch.column_by_name("character_maximum_length").map(|c| {
            c.as_primitive::<datafusion::arrow::datatypes::UInt64Type>()
                .clone()
        });
        for r in 0..batch.num_rows() {
            let key = (
                catalogs.value(r).to_string(),
                schemas.value(r).to_string(),
                tables.value(r).to_string(),
            );
            if !described.contains_key(&key) {
                let d = self.describe(&key.0, &key.1, &key.2).await;
                described.insert(key.clone(), d);
            }
            let d = &described[&key];
            let column = names.value(r);
            let t = d.types.get(column);
            let f = d
                .facts
                .as_ref()
                .and_then(|f| f.columns.iter().find(|c| c.name == column));
            data_type.push(Some(
                t.map_or_else(|| old_type.value(r).to_string(), ColumnType::sql_name),
            ));
            max_length.push(match t {
                Some(t) => t.max_length().map(|n| n as u64),
                None => old_length
                    .as_ref()
                    .and_then(|l| l.is_valid(r).then(|| l.value(r))),
            });
            nullable.push(Some(match f {
                Some(f) if f.not_null => "NO".to_string(),
                _ => old_nullable.value(r).to_string(),
            }));
            default.push(match f.and_then(|f| f.default.clone()) {
                Some(d) => Some(d),
                None => old_default
                    .is_valid(r)
                    .then(|| old_default.value(r).to_string()),
            });
            udt_schema.push(t.map(|_| "pg_catalog".to_string()));
            udt_name.push(t.map(ColumnType::udt_name));
        }
        let inner_schema = self.inner.schema();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for (i, field) in inner_schema.fields().iter().enumerate() {
            columns.push(match field.name().as_str() {
                "data_type" => Arc::new(StringArray::from(data_type.clone())),
                "is_nullable" => Arc::new(StringArray::from(nullable.clone())),
                "column_default" => Arc::new(StringArray::from(default.clone())),
                "character_maximum_length" => Arc::new(UInt64Array::from(max_length.clone())),
                _ => Arc::clone(batch.column(i)),
            });
        }
        columns.push(Arc::new(StringArray::from(udt_schema)));
        columns.push(Arc::new(StringArray::from(udt_name)));
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

#[async_trait]
impl TableProvider for Columns {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batch = self.rows(state).await?;
        MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            Arc::clone(&self.schema),
            projection.cloned(),
        )
        .map(|e| e as Arc<dyn ExecutionPlan>)
    }
}
