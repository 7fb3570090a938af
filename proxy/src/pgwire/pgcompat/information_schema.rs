//! information_schema as PostgreSQL fills it, over DataFusion's: `columns` names
//! types as PostgreSQL does (`integer`, `character varying`, `ARRAY`, with
//! `udt_name`), not as Arrow does (`Int32`, `Utf8`), and takes NOT NULL and defaults
//! from the origin where it knows them (Grafana, Metabase and DBeaver read these);
//! `table_constraints`, `key_column_usage`, `referential_constraints` and
//! `constraint_column_usage` list the origins' keys (only those whose columns the
//! user may read).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int32Array, RecordBatch, StringArray, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{CatalogProviderList, SchemaProvider, Session};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::{collect, ExecutionPlan};
use switchyard_connectors::facts::{ConstraintKind, TableFacts};

use crate::pgwire::pgcompat::catalog_facts::table_facts;
use crate::pgwire::pgcompat::column_type::{self, ColumnType};

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
        let mut names = self.inner.table_names();
        names.extend(KeyTable::ALL.iter().map(|k| k.name().to_string()));
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if let Some(kind) = KeyTable::ALL
            .iter()
            .find(|k| k.name().eq_ignore_ascii_case(name))
        {
            return Ok(Some(Arc::new(Keys {
                kind: *kind,
                schema: kind.schema(),
                views: Arc::clone(&self.views),
                shared: Arc::clone(&self.shared),
            })));
        }
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
            || KeyTable::ALL
                .iter()
                .any(|k| k.name().eq_ignore_ascii_case(name))
    }
}

/// A plan reading `batch` (a listing built at scan time).
fn scan_of(batch: RecordBatch, projection: Option<&Vec<usize>>) -> Result<Arc<dyn ExecutionPlan>> {
    let schema = batch.schema();
    MemorySourceConfig::try_new_exec(&[vec![batch]], schema, projection.cloned())
        .map(|e| e as Arc<dyn ExecutionPlan>)
}

/// `schema` with `udt_schema` and `udt_name` added, and DataFusion's UInt64 counts
/// (`ordinal_position`, `character_maximum_length`, ...) as PostgreSQL's
/// `cardinal_number`, an integer.
fn with_udt(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::UInt64 => f.as_ref().clone().with_data_type(DataType::Int32),
            _ => f.as_ref().clone(),
        })
        .collect();
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
        let facts = table_facts(&self.shared, catalog, schema, table).await;
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
            let column: ArrayRef = match field.name().as_str() {
                "data_type" => Arc::new(StringArray::from(data_type.clone())),
                "is_nullable" => Arc::new(StringArray::from(nullable.clone())),
                "column_default" => Arc::new(StringArray::from(default.clone())),
                "character_maximum_length" => Arc::new(UInt64Array::from(max_length.clone())),
                _ => Arc::clone(batch.column(i)),
            };
            let planned = self.schema.field(i).data_type();
            columns.push(if column.data_type() == planned {
                column
            } else {
                datafusion::arrow::compute::cast(&column, planned)?
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
        scan_of(self.rows(state).await?, projection)
    }
}

/// The information_schema views of keys.
#[derive(Debug, Clone, Copy, PartialEq)]
enum KeyTable {
    TableConstraints,
    KeyColumnUsage,
    ReferentialConstraints,
    ConstraintColumnUsage,
}

impl KeyTable {
    const ALL: [KeyTable; 4] = [
        KeyTable::TableConstraints,
        KeyTable::KeyColumnUsage,
        KeyTable::ReferentialConstraints,
        KeyTable::ConstraintColumnUsage,
    ];

    fn name(self) -> &'static str {
        match self {
            KeyTable::TableConstraints => "table_constraints",
            KeyTable::KeyColumnUsage => "key_column_usage",
            KeyTable::ReferentialConstraints => "referential_constraints",
            KeyTable::ConstraintColumnUsage => "constraint_column_usage",
        }
    }

    /// PostgreSQL's columns of the view (text, and int4 for positions).
    fn schema(self) -> SchemaRef {
        let text = |n: &str| Field::new(n, DataType::Utf8, true);
        let int = |n: &str| Field::new(n, DataType::Int32, true);
        let fields = match self {
            KeyTable::TableConstraints => vec![
                text("constraint_catalog"),
                text("constraint_schema"),
                text("constraint_name"),
                text("table_catalog"),
                text("table_schema"),
                text("table_name"),
                text("constraint_type"),
                text("is_deferrable"),
                text("initially_deferred"),
                text("enforced"),
                text("nulls_distinct"),
            ],
            KeyTable::KeyColumnUsage => vec![
                text("constraint_catalog"),
                text("constraint_schema"),
                text("constraint_name"),
                text("table_catalog"),
                text("table_schema"),
                text("table_name"),
                text("column_name"),
                int("ordinal_position"),
                int("position_in_unique_constraint"),
            ],
            KeyTable::ReferentialConstraints => vec![
                text("constraint_catalog"),
                text("constraint_schema"),
                text("constraint_name"),
                text("unique_constraint_catalog"),
                text("unique_constraint_schema"),
                text("unique_constraint_name"),
                text("match_option"),
                text("update_rule"),
                text("delete_rule"),
            ],
            KeyTable::ConstraintColumnUsage => vec![
                text("table_catalog"),
                text("table_schema"),
                text("table_name"),
                text("column_name"),
                text("constraint_catalog"),
                text("constraint_schema"),
                text("constraint_name"),
            ],
        };
        Arc::new(Schema::new(fields))
    }
}

/// One of the key views, built from the viewer's tables and the origins' facts.
#[derive(Debug)]
struct Keys {
    kind: KeyTable,
    schema: SchemaRef,
    views: Arc<dyn CatalogProviderList>,
    shared: Arc<dyn CatalogProviderList>,
}

/// A cell of a key view's row.
enum Cell {
    Text(Option<String>),
    Int(Option<i32>),
}

fn rule(action: char) -> &'static str {
    match action {
        'r' => "RESTRICT",
        'c' => "CASCADE",
        'n' => "SET NULL",
        'd' => "SET DEFAULT",
        _ => "NO ACTION",
    }
}

impl Keys {
    /// (catalog, schema, table) → the columns the viewer may read, for every table.
    async fn tables(&self) -> Vec<((String, String, String), Vec<String>)> {
        let mut out = Vec::new();
        for catalog in self.views.catalog_names() {
            let Some(c) = self.views.catalog(&catalog) else {
                continue;
            };
            for schema in c.schema_names() {
                let Some(s) = c.schema(&schema) else { continue };
                for table in s.table_names() {
                    if let Ok(Some(t)) = s.table(&table).await {
                        let columns = t
                            .schema()
                            .fields()
                            .iter()
                            .map(|f| f.name().clone())
                            .collect();
                        out.push(((catalog.clone(), schema.clone(), table), columns));
                    }
                }
            }
        }
        out
    }

    async fn rows(&self) -> Result<RecordBatch> {
        let tables = self.tables().await;
        let visible: HashMap<(String, String), Vec<String>> = tables
            .iter()
            .map(|((_, s, t), cols)| ((s.clone(), t.clone()), cols.clone()))
            .collect();
        let readable = |schema: &str, table: &str, columns: &[String]| {
            visible
                .get(&(schema.to_string(), table.to_string()))
                .is_some_and(|cols| columns.iter().all(|c| cols.contains(c)))
        };
        let mut rows: Vec<Vec<Cell>> = Vec::new();
        let t = |s: &str| Cell::Text(Some(s.to_string()));
        for ((catalog, schema, table), _) in &tables {
            let Some(facts) = table_facts(&self.shared, catalog, schema, table).await else {
                continue;
            };
            // The unique constraints of a table, by their columns (for FK targets).
            for c in &facts.constraints {
                if !readable(schema, table, &c.columns) {
                    continue;
                }
                let fk = match &c.kind {
                    ConstraintKind::ForeignKey(fk) => {
                        if !readable(&fk.schema, &fk.table, &fk.columns) {
                            continue;
                        }
                        Some(fk)
                    }
                    _ => None,
                };
                let kind = match &c.kind {
                    ConstraintKind::PrimaryKey => "PRIMARY KEY",
                    ConstraintKind::Unique => "UNIQUE",
                    ConstraintKind::ForeignKey(_) => "FOREIGN KEY",
                    ConstraintKind::Check(_) => "CHECK",
                };
                let yes_no = |b: bool| t(if b { "YES" } else { "NO" });
                match self.kind {
                    KeyTable::TableConstraints => rows.push(vec![
                        t(catalog),
                        t(schema),
                        t(&c.name),
                        t(catalog),
                        t(schema),
                        t(table),
                        t(kind),
                        yes_no(c.deferrable),
                        yes_no(c.deferred),
                        t("YES"),
                        match c.kind {
                            ConstraintKind::PrimaryKey | ConstraintKind::Unique => t("YES"),
                            _ => Cell::Text(None),
                        },
                    ]),
                    KeyTable::KeyColumnUsage => {
                        if matches!(c.kind, ConstraintKind::Check(_)) {
                            continue;
                        }
                        for (i, column) in c.columns.iter().enumerate() {
                            rows.push(vec![
                                t(catalog),
                                t(schema),
                                t(&c.name),
                                t(catalog),
                                t(schema),
                                t(table),
                                t(column),
                                Cell::Int(Some(i as i32 + 1)),
                                Cell::Int(fk.map(|_| i as i32 + 1)),
                            ]);
                        }
                    }
                    KeyTable::ReferentialConstraints => {
                        let Some(fk) = fk else { continue };
                        let target = table_facts(&self.shared, catalog, &fk.schema, &fk.table)
                            .await
                            .and_then(|f| {
                                f.constraints
                                    .iter()
                                    .find(|u| {
                                        matches!(
                                            u.kind,
                                            ConstraintKind::PrimaryKey | ConstraintKind::Unique
                                        ) && u.columns == fk.columns
                                    })
                                    .map(|u| u.name.clone())
                            });
                        rows.push(vec![
                            t(catalog),
                            t(schema),
                            t(&c.name),
                            t(catalog),
                            t(&fk.schema),
                            Cell::Text(target),
                            t(match fk.match_type {
                                'f' => "FULL",
                                'p' => "PARTIAL",
                                _ => "NONE",
                            }),
                            t(rule(fk.on_update)),
                            t(rule(fk.on_delete)),
                        ]);
                    }
                    KeyTable::ConstraintColumnUsage => {
                        let (on_schema, on_table, columns) = match fk {
                            Some(fk) => (fk.schema.as_str(), fk.table.as_str(), &fk.columns),
                            None => (schema.as_str(), table.as_str(), &c.columns),
                        };
                        if matches!(c.kind, ConstraintKind::Check(_)) {
                            continue;
                        }
                        for column in columns {
                            rows.push(vec![
                                t(catalog),
                                t(on_schema),
                                t(on_table),
                                t(column),
                                t(catalog),
                                t(schema),
                                t(&c.name),
                            ]);
                        }
                    }
                }
            }
        }
        let columns: Vec<ArrayRef> = self
            .schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| -> ArrayRef {
                if *f.data_type() == DataType::Int32 {
                    Arc::new(Int32Array::from_iter(rows.iter().map(|r| match &r[i] {
                        Cell::Int(v) => *v,
                        Cell::Text(_) => None,
                    })))
                } else {
                    Arc::new(StringArray::from_iter(rows.iter().map(|r| match &r[i] {
                        Cell::Text(v) => v.clone(),
                        Cell::Int(_) => None,
                    })))
                }
            })
            .collect();
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

#[async_trait]
impl TableProvider for Keys {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        scan_of(self.rows().await?, projection)
    }
}
