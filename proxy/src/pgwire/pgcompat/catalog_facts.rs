//! The origins' catalog facts in a session's pg_catalog: primary, unique and foreign
//! keys (pg_constraint), indexes (pg_index and their pg_class rows), defaults
//! (pg_attrdef) and NOT NULL (pg_attribute), plus the functions that print them
//! (`pg_get_indexdef`, `pg_get_constraintdef`, `pg_get_expr`).
//!
//! Built on every scan from the session's own pg_class / pg_attribute (so table oids
//! and attnums are the ones the client already saw, and only the viewer's tables and
//! columns are there) and the facts `switchyard_connectors` read from the origins. A
//! fact naming a column or table the viewer cannot see is left out. Index, constraint
//! and default oids are hashes of their names, so they are the same in every query.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int16Array, Int32Array, RecordBatch, StringArray,
};
use datafusion::arrow::compute::{cast, concat};
use datafusion::arrow::datatypes::{DataType, Field, Int16Type, Int32Type, Schema, SchemaRef};
use datafusion::catalog::{CatalogProviderList, SchemaProvider, Session};
use datafusion::common::ScalarValue;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_plan::{collect, ExecutionPlan};
use datafusion::prelude::{Expr, SessionContext};
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::oid_field::{kind, oid_field};
use switchyard_connectors::catalog::OriginSchema;
use switchyard_connectors::facts::{ConstraintKind, TableFacts};

/// Texts the `pg_get_*def` functions print, by oid, for what this session has listed.
#[derive(Debug, Default)]
pub struct Definitions {
    by_oid: Mutex<HashMap<i32, Definition>>,
}

#[derive(Debug, Clone)]
enum Definition {
    Index { def: String, columns: Vec<String> },
    Constraint(String),
}

impl Definitions {
    fn get(&self, oid: i32) -> Option<Definition> {
        self.by_oid
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&oid)
            .cloned()
    }

    fn extend(&self, more: HashMap<i32, Definition>) {
        self.by_oid
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(more);
    }
}

/// The catalog tables this module builds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Class,
    Attribute,
    Constraint,
    Index,
    Attrdef,
    /// pg_settings plus the index limits clients ask for (pgjdbc's getImportedKeys).
    Settings,
    /// pg_database naming the database the client connected to (`\l`).
    Database,
}

/// pg_catalog with the origins' facts added.
#[derive(Debug)]
pub struct FactsCatalog {
    /// The database the client connected to, set at login.
    database: Arc<OnceLock<String>>,
    inner: Arc<dyn SchemaProvider>,
    shared: Arc<dyn CatalogProviderList>,
    catalog: String,
    definitions: Arc<Definitions>,
}

impl FactsCatalog {
    /// `inner` is the session's pg_catalog; `shared` the planning catalogs, whose
    /// origin schemas hold the facts.
    pub fn new(
        inner: Arc<dyn SchemaProvider>,
        shared: Arc<dyn CatalogProviderList>,
        catalog: &str,
        definitions: Arc<Definitions>,
        database: Arc<OnceLock<String>>,
    ) -> Self {
        FactsCatalog {
            inner,
            shared,
            catalog: catalog.to_string(),
            definitions,
            database,
        }
    }
}

#[async_trait]
impl SchemaProvider for FactsCatalog {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let kind = match name.to_ascii_lowercase().as_str() {
            "pg_class" => Kind::Class,
            "pg_attribute" => Kind::Attribute,
            "pg_constraint" => Kind::Constraint,
            "pg_index" => Kind::Index,
            "pg_attrdef" => Kind::Attrdef,
            "pg_settings" => Kind::Settings,
            "pg_database" => Kind::Database,
            _ => return self.inner.table(name).await,
        };
        let schema = match kind {
            Kind::Class | Kind::Attribute | Kind::Settings | Kind::Database => {
                match self.inner.table(name).await? {
                    Some(t) if kind == Kind::Class => with_reloptions(&t.schema()),
                    Some(t) => t.schema(),
                    None => return Ok(None),
                }
            }
            Kind::Constraint => constraint_schema(),
            Kind::Index => index_schema(),
            Kind::Attrdef => attrdef_schema(),
        };
        Ok(Some(Arc::new(FactsTable {
            kind,
            schema,
            inner: Arc::clone(&self.inner),
            shared: Arc::clone(&self.shared),
            catalog: self.catalog.clone(),
            definitions: Arc::clone(&self.definitions),
            database: Arc::clone(&self.database),
        })))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

#[derive(Debug)]
struct FactsTable {
    kind: Kind,
    schema: SchemaRef,
    inner: Arc<dyn SchemaProvider>,
    shared: Arc<dyn CatalogProviderList>,
    catalog: String,
    definitions: Arc<Definitions>,
    database: Arc<OnceLock<String>>,
}

#[async_trait]
impl TableProvider for FactsTable {
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
        let batch = self.build(state).await?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            Arc::clone(&self.schema),
            projection.cloned(),
        )?)
    }
}

/// pg_database's row of our catalog (DataFusion's other catalogs are not
/// databases a client can reach), named as the database the client asked for.
fn database(batch: &RecordBatch, catalog: &str, name: &OnceLock<String>) -> Result<RecordBatch> {
    let names = string(batch, "datname")?;
    let ours = datafusion::arrow::array::BooleanArray::from_iter(
        (0..batch.num_rows()).map(|i| Some(names.value(i) == catalog)),
    );
    let batch = datafusion::arrow::compute::filter_record_batch(batch, &ours)?;
    let Some(name) = name.get() else {
        return Ok(batch);
    };
    let schema = batch.schema();
    let at = schema.index_of("datname")?;
    let mut columns = batch.columns().to_vec();
    columns[at] = Arc::new(datafusion::arrow::array::StringArray::from(vec![
        name.as_str();
        batch.num_rows()
    ]));
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// One visible table: its oids and attnums as the session lists them, and its facts.
struct Listed {
    oid: i32,
    namespace: i32,
    schema: String,
    name: String,
    attnums: BTreeMap<String, i16>,
    facts: Option<Arc<TableFacts>>,
}

impl FactsTable {
    async fn inner_batch(&self, state: &dyn Session, name: &str) -> Result<RecordBatch> {
        let table =
            self.inner.table(name).await?.ok_or_else(|| {
                DataFusionError::Internal(format!("pg_catalog.{name} is missing"))
            })?;
        let plan = table.scan(state, None, &[], None).await?;
        let batches = collect(plan, state.task_ctx()).await?;
        Ok(datafusion::arrow::compute::concat_batches(
            &table.schema(),
            &batches,
        )?)
    }

    async fn build(&self, state: &dyn Session) -> Result<RecordBatch> {
        if self.kind == Kind::Settings {
            return settings(&self.inner_batch(state, "pg_settings").await?);
        }
        if self.kind == Kind::Database {
            let all = self.inner_batch(state, "pg_database").await?;
            return database(&all, &self.catalog, &self.database);
        }
        let namespaces = self.inner_batch(state, "pg_namespace").await?;
        let class = self.inner_batch(state, "pg_class").await?;
        let attribute = self.inner_batch(state, "pg_attribute").await?;

        let mut nsp_names = HashMap::new();
        let oids = int32(&namespaces, "oid")?;
        let names = string(&namespaces, "nspname")?;
        for i in 0..namespaces.num_rows() {
            nsp_names.insert(oids.value(i), names.value(i).to_string());
        }
        let mut tables: BTreeMap<i32, Listed> = BTreeMap::new();
        let (oids, names, nsps) = (
            int32(&class, "oid")?,
            string(&class, "relname")?,
            int32(&class, "relnamespace")?,
        );
        for i in 0..class.num_rows() {
            let Some(schema) = nsp_names.get(&nsps.value(i)) else {
                continue;
            };
            if schema == "pg_catalog" || schema == "information_schema" {
                continue;
            }
            tables.insert(
                oids.value(i),
                Listed {
                    oid: oids.value(i),
                    namespace: nsps.value(i),
                    schema: schema.clone(),
                    name: names.value(i).to_string(),
                    attnums: BTreeMap::new(),
                    facts: None,
                },
            );
        }
        let (relids, attnames) = (
            int32(&attribute, "attrelid")?,
            string(&attribute, "attname")?,
        );
        let attnums = attribute
            .column_by_name("attnum")
            .ok_or_else(|| DataFusionError::Internal("pg_attribute.attnum".into()))?
            .as_primitive::<Int16Type>();
        for i in 0..attribute.num_rows() {
            if let Some(t) = tables.get_mut(&relids.value(i)) {
                t.attnums
                    .insert(attnames.value(i).to_string(), attnums.value(i));
            }
        }
        for t in tables.values_mut() {
            t.facts = self.facts(&t.schema, &t.name).await;
        }
        let mut facts = Facts::new(&tables);
        if self.kind == Kind::Attribute {
            for t in tables.values() {
                let Some(columns) = self.columns(&t.schema, &t.name).await else {
                    continue;
                };
                for f in columns.fields() {
                    facts.types.insert(
                        (t.oid, f.name().clone()),
                        crate::pgwire::pgcompat::column_type::of(f),
                    );
                }
            }
        }
        self.definitions.extend(facts.definitions.clone());
        match self.kind {
            Kind::Class => facts.class(&class),
            Kind::Attribute => facts.attribute(&attribute),
            Kind::Constraint => facts.batch(&self.schema, &facts.constraints),
            Kind::Index => facts.batch(&self.schema, &facts.indexes),
            // Settings and Database returned before the facts were gathered.
            Kind::Attrdef | Kind::Settings | Kind::Database => {
                facts.batch(&self.schema, &facts.attrdefs)
            }
        }
    }

    /// A table's columns as the planner holds them (with the origin's type names).
    async fn columns(&self, schema: &str, table: &str) -> Option<SchemaRef> {
        let provider = self.shared.catalog(&self.catalog)?.schema(schema)?;
        Some(provider.table(table).await.ok()??.schema())
    }

    async fn facts(&self, schema: &str, table: &str) -> Option<Arc<TableFacts>> {
        table_facts(&self.shared, &self.catalog, schema, table).await
    }
}

/// An origin table's keys, indexes, NOT NULL and defaults (PostgreSQL whole-table
/// datasets), for pg_catalog and information_schema alike.
pub(super) async fn table_facts(
    shared: &Arc<dyn CatalogProviderList>,
    catalog: &str,
    schema: &str,
    table: &str,
) -> Option<Arc<TableFacts>> {
    let provider = shared.catalog(catalog)?.schema(schema)?;
    let origin = (provider.as_ref() as &dyn std::any::Any).downcast_ref::<OriginSchema>()?;
    match origin.facts(table).await {
        Ok(facts) => facts,
        Err(e) => {
            // A listing must not fail because one origin is down; the table
            // simply shows no keys or indexes this time.
            tracing::warn!(%schema, %table, error = %e, "catalog facts unavailable");
            None
        }
    }
}

fn int32<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a Int32Array> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<Int32Type>())
        .ok_or_else(|| DataFusionError::Internal(format!("pg_catalog column {name}")))
}

fn string<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a StringArray> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| DataFusionError::Internal(format!("pg_catalog column {name}")))
}

/// A stable oid for a catalog object named by `parts`: FNV-1a, in a range above
/// the oids pg_catalog hands out to tables (which count up from 16384).
fn fact_oid(parts: &[&str]) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for part in parts {
        for b in part.bytes().chain([0]) {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    1_000_000_000 + (h % 1_000_000_000) as i32
}

/// `name` as PostgreSQL prints an identifier (quoted unless plain lowercase).
fn ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

fn ident_list(names: &[String]) -> String {
    names
        .iter()
        .map(String::as_str)
        .map(ident)
        .collect::<Vec<_>>()
        .join(", ")
}

fn action(c: char) -> Option<&'static str> {
    match c {
        'r' => Some("RESTRICT"),
        'c' => Some("CASCADE"),
        'n' => Some("SET NULL"),
        'd' => Some("SET DEFAULT"),
        _ => None,
    }
}

/// Access-method oids as in PostgreSQL's pg_am.
fn am_oid(method: &str) -> i32 {
    match method {
        "hash" => 405,
        "gist" => 783,
        "gin" => 2742,
        "spgist" => 4000,
        "brin" => 3580,
        _ => 403,
    }
}

type Row = HashMap<&'static str, ScalarValue>;

fn int2_list(values: &[i16]) -> ScalarValue {
    let scalars: Vec<ScalarValue> = values
        .iter()
        .map(|v| ScalarValue::Int16(Some(*v)))
        .collect();
    ScalarValue::List(ScalarValue::new_list_nullable(&scalars, &DataType::Int16))
}

fn text(s: impl Into<String>) -> ScalarValue {
    ScalarValue::Utf8(Some(s.into()))
}

fn oid(v: i32) -> ScalarValue {
    ScalarValue::Int32(Some(v))
}

/// Everything derived for one scan.
struct Facts {
    constraints: Vec<Row>,
    indexes: Vec<Row>,
    attrdefs: Vec<Row>,
    index_classes: Vec<Row>,
    with_index: std::collections::HashSet<i32>,
    /// Tables on either end of a foreign key (PostgreSQL's FK triggers; psql shows
    /// foreign keys only for tables with triggers).
    with_triggers: std::collections::HashSet<i32>,
    /// (table oid, column) → (not null, has default).
    columns: HashMap<(i32, String), (bool, bool)>,
    /// (table oid, column) → its PostgreSQL type (pg_attribute only).
    types: HashMap<(i32, String), crate::pgwire::pgcompat::column_type::ColumnType>,
    definitions: HashMap<i32, Definition>,
}

impl Facts {
    fn new(tables: &BTreeMap<i32, Listed>) -> Self {
        let mut out = Facts {
            constraints: vec![],
            indexes: vec![],
            attrdefs: vec![],
            index_classes: vec![],
            with_index: Default::default(),
            with_triggers: Default::default(),
            columns: HashMap::new(),
            types: HashMap::new(),
            definitions: HashMap::new(),
        };
        let by_name: HashMap<(&str, &str), &Listed> = tables
            .values()
            .map(|t| ((t.schema.as_str(), t.name.as_str()), t))
            .collect();
        let nums = |t: &Listed, cols: &[String]| -> Option<Vec<i16>> {
            cols.iter().map(|c| t.attnums.get(c).copied()).collect()
        };
        for t in tables.values() {
            let Some(facts) = &t.facts else { continue };
            let qualified = format!("{}.{}", ident(&t.schema), ident(&t.name));
            for c in &facts.columns {
                let Some(&attnum) = t.attnums.get(&c.name) else {
                    continue;
                };
                out.columns
                    .insert((t.oid, c.name.clone()), (c.not_null, c.default.is_some()));
                if let Some(default) = &c.default {
                    out.attrdefs.push(Row::from([
                        ("oid", oid(fact_oid(&["d", &t.schema, &t.name, &c.name]))),
                        ("adrelid", oid(t.oid)),
                        ("adnum", ScalarValue::Int16(Some(attnum))),
                        ("adbin", text(default.clone())),
                    ]));
                }
            }
            // Indexes the viewer may see: all their columns visible.
            let mut visible_indexes = HashMap::new();
            for index in &facts.indexes {
                let all: Vec<String> = index.all_columns().cloned().collect();
                let Some(keys) = nums(t, &all) else { continue };
                let index_oid = fact_oid(&["i", &t.schema, &t.name, &index.name]);
                visible_indexes.insert(index.name.clone(), index_oid);
                out.with_index.insert(t.oid);
                let mut def = format!(
                    "CREATE {}INDEX {} ON {} USING {} ({})",
                    if index.unique { "UNIQUE " } else { "" },
                    ident(&index.name),
                    qualified,
                    index.method,
                    ident_list(&index.columns)
                );
                if !index.include.is_empty() {
                    def.push_str(&format!(" INCLUDE ({})", ident_list(&index.include)));
                }
                out.definitions.insert(
                    index_oid,
                    Definition::Index {
                        def,
                        columns: all.clone(),
                    },
                );
                let n = keys.len() as i16;
                out.indexes.push(Row::from([
                    ("indexrelid", oid(index_oid)),
                    ("indrelid", oid(t.oid)),
                    ("indnatts", ScalarValue::Int16(Some(n))),
                    (
                        "indnkeyatts",
                        ScalarValue::Int16(Some(index.columns.len() as i16)),
                    ),
                    ("indisunique", ScalarValue::Boolean(Some(index.unique))),
                    ("indisprimary", ScalarValue::Boolean(Some(index.primary))),
                    ("indimmediate", ScalarValue::Boolean(Some(true))),
                    ("indisvalid", ScalarValue::Boolean(Some(true))),
                    ("indisready", ScalarValue::Boolean(Some(true))),
                    ("indislive", ScalarValue::Boolean(Some(true))),
                    ("indkey", int2_list(&keys)),
                    // int2vector, as PostgreSQL prints it ("0 0"): SQLAlchemy splits it.
                    ("indoption", text(vec!["0"; keys.len()].join(" "))),
                ]));
                out.index_classes.push(Row::from([
                    ("oid", oid(index_oid)),
                    ("relname", text(index.name.clone())),
                    ("relnamespace", oid(t.namespace)),
                    ("relam", oid(am_oid(&index.method))),
                    ("relfilenode", oid(index_oid)),
                    ("relpages", oid(1)),
                    ("relpersistence", text("p")),
                    ("relkind", text("i")),
                    ("relnatts", ScalarValue::Int16(Some(n))),
                    ("relispopulated", ScalarValue::Boolean(Some(true))),
                    ("relreplident", text("n")),
                ]));
            }
            for c in &facts.constraints {
                let Some(keys) = nums(t, &c.columns) else {
                    continue;
                };
                let constraint_oid = fact_oid(&["c", &t.schema, &t.name, &c.name]);
                let mut row = Row::from([
                    ("oid", oid(constraint_oid)),
                    ("conname", text(c.name.clone())),
                    ("connamespace", oid(t.namespace)),
                    ("condeferrable", ScalarValue::Boolean(Some(c.deferrable))),
                    ("condeferred", ScalarValue::Boolean(Some(c.deferred))),
                    ("convalidated", ScalarValue::Boolean(Some(true))),
                    ("conrelid", oid(t.oid)),
                    ("conislocal", ScalarValue::Boolean(Some(true))),
                    ("conkey", int2_list(&keys)),
                ]);
                let (contype, def, index_oid) = match &c.kind {
                    ConstraintKind::PrimaryKey | ConstraintKind::Unique => {
                        let primary = c.kind == ConstraintKind::PrimaryKey;
                        let index_oid = c
                            .index
                            .as_ref()
                            .and_then(|i| visible_indexes.get(i).copied())
                            .unwrap_or(0);
                        (
                            if primary { "p" } else { "u" },
                            format!(
                                "{} ({})",
                                if primary { "PRIMARY KEY" } else { "UNIQUE" },
                                ident_list(&c.columns)
                            ),
                            index_oid,
                        )
                    }
                    ConstraintKind::Check(def) => ("c", def.clone(), 0),
                    ConstraintKind::ForeignKey(fk) => {
                        // Both ends must be visible: the referenced table and its columns.
                        let Some(target) = by_name.get(&(fk.schema.as_str(), fk.table.as_str()))
                        else {
                            continue;
                        };
                        let Some(fkeys) = nums(target, &fk.columns) else {
                            continue;
                        };
                        let mut def = format!(
                            "FOREIGN KEY ({}) REFERENCES {}.{}({})",
                            ident_list(&c.columns),
                            ident(&fk.schema),
                            ident(&fk.table),
                            ident_list(&fk.columns)
                        );
                        if fk.match_type == 'f' {
                            def.push_str(" MATCH FULL");
                        }
                        if let Some(a) = action(fk.on_update) {
                            def.push_str(&format!(" ON UPDATE {a}"));
                        }
                        if let Some(a) = action(fk.on_delete) {
                            def.push_str(&format!(" ON DELETE {a}"));
                        }
                        if c.deferrable {
                            def.push_str(" DEFERRABLE");
                        }
                        if c.deferred {
                            def.push_str(" INITIALLY DEFERRED");
                        }
                        let index_oid = c
                            .index
                            .as_ref()
                            .filter(|i| {
                                target.facts.as_ref().is_some_and(|f| {
                                    f.indexes.iter().any(|x| {
                                        &x.name == *i
                                            && x.all_columns()
                                                .all(|c| target.attnums.contains_key(c))
                                    })
                                })
                            })
                            .map(|i| fact_oid(&["i", &target.schema, &target.name, i]))
                            .unwrap_or(0);
                        out.with_triggers.insert(t.oid);
                        out.with_triggers.insert(target.oid);
                        row.insert("confrelid", oid(target.oid));
                        row.insert("confkey", int2_list(&fkeys));
                        row.insert("confupdtype", text(fk.on_update.to_string()));
                        row.insert("confdeltype", text(fk.on_delete.to_string()));
                        row.insert("confmatchtype", text(fk.match_type.to_string()));
                        ("f", def, index_oid)
                    }
                };
                row.insert("contype", text(contype));
                row.insert("conindid", oid(index_oid));
                row.insert("conbin", ScalarValue::Utf8(None));
                out.definitions
                    .insert(constraint_oid, Definition::Constraint(def));
                out.constraints.push(row);
            }
        }
        out
    }

    /// Rows as a batch of `schema`; missing columns get PostgreSQL's zero values.
    fn batch(&self, schema: &SchemaRef, rows: &[Row]) -> Result<RecordBatch> {
        let columns = schema
            .fields()
            .iter()
            .map(|f| column(f, rows))
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(schema),
            columns,
            &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows.len())),
        )?)
    }

    /// pg_class with relhasindex / relhastriggers set and the index rows appended.
    fn class(&self, class: &RecordBatch) -> Result<RecordBatch> {
        let oids = int32(class, "oid")?;
        let schema = class.schema();
        let mut columns = Vec::with_capacity(schema.fields().len());
        for (i, f) in schema.fields().iter().enumerate() {
            let set = match f.name().as_str() {
                "relhasindex" => Some(&self.with_index),
                "relhastriggers" => Some(&self.with_triggers),
                _ => None,
            };
            let base = match set {
                Some(set) => {
                    let patched: BooleanArray = (0..class.num_rows())
                        .map(|r| Some(set.contains(&oids.value(r))))
                        .collect();
                    Arc::new(patched) as ArrayRef
                }
                None => Arc::clone(class.column(i)),
            };
            let added = column(f, &self.index_classes)?;
            columns.push(concat(&[base.as_ref(), added.as_ref()])?);
        }
        let schema = with_reloptions(&schema);
        let rows = columns.first().map(|c| c.len()).unwrap_or(0);
        columns.push(datafusion::arrow::array::new_null_array(
            schema.field(schema.fields().len() - 1).data_type(),
            rows,
        ));
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    /// pg_attribute with attnotnull / atthasdef from the origin and each column's type.
    fn attribute(&self, attribute: &RecordBatch) -> Result<RecordBatch> {
        let relids = int32(attribute, "attrelid")?;
        let names = string(attribute, "attname")?;
        let schema = attribute.schema();
        let mut columns = attribute.columns().to_vec();
        for (name, pick) in [("attnotnull", 0), ("atthasdef", 1)] {
            let Some((i, _)) = schema.column_with_name(name) else {
                continue;
            };
            let old = columns[i].as_boolean().clone();
            let patched: BooleanArray = (0..attribute.num_rows())
                .map(|r| {
                    let known = self
                        .columns
                        .get(&(relids.value(r), names.value(r).to_string()))
                        .map(|(n, d)| if pick == 0 { *n } else { *d });
                    Some(known.unwrap_or(old.value(r)))
                })
                .collect();
            columns[i] = Arc::new(patched);
        }
        // Types: datafusion-pg-catalog maps what it does not know (interval, uuid,
        // most arrays) to text and keeps no type modifiers.
        let types: Vec<Option<&crate::pgwire::pgcompat::column_type::ColumnType>> = (0..attribute
            .num_rows())
            .map(|r| {
                self.types
                    .get(&(relids.value(r), names.value(r).to_string()))
            })
            .collect();
        if let Some((i, _)) = schema.column_with_name("atttypid") {
            let old = columns[i].as_primitive::<Int32Type>().clone();
            columns[i] =
                Arc::new(Int32Array::from_iter((0..types.len()).map(|r| {
                    Some(types[r].map_or(old.value(r), |t| t.ty.oid() as i32))
                })));
        }
        if let Some((i, _)) = schema.column_with_name("atttypmod") {
            let old = columns[i].as_primitive::<Int32Type>().clone();
            columns[i] = Arc::new(Int32Array::from_iter(
                (0..types.len()).map(|r| Some(types[r].map_or(old.value(r), |t| t.typmod))),
            ));
        }
        if let Some((i, _)) = schema.column_with_name("attndims") {
            let old = columns[i].as_primitive::<Int32Type>().clone();
            columns[i] = Arc::new(Int32Array::from_iter(
                (0..types.len()).map(|r| Some(types[r].map_or(old.value(r), |t| t.ndims))),
            ));
        }
        if let Some((i, _)) = schema.column_with_name("attlen") {
            let old = columns[i].as_primitive::<Int16Type>().clone();
            columns[i] = Arc::new(Int16Array::from_iter(
                (0..types.len()).map(|r| Some(types[r].map_or(old.value(r), |t| t.len))),
            ));
        }
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

/// PostgreSQL's compile-time index limits, read-only settings.
const LIMITS: &[(&str, &str)] = &[("max_index_keys", "32"), ("max_identifier_length", "63")];

/// pg_settings with [`LIMITS`] added where missing.
fn settings(batch: &RecordBatch) -> Result<RecordBatch> {
    let names = string(batch, "name")?;
    let have: std::collections::HashSet<&str> = names.iter().flatten().collect();
    let rows: Vec<Row> = LIMITS
        .iter()
        .filter(|(name, _)| !have.contains(name))
        .map(|(name, value)| {
            Row::from([
                ("name", text(*name)),
                ("setting", text(*value)),
                ("category", text("Preset Options")),
                ("context", text("internal")),
                ("vartype", text("integer")),
                ("source", text("default")),
                ("min_val", text(*value)),
                ("max_val", text(*value)),
                ("reset_val", text(*value)),
            ])
        })
        .collect();
    let schema = batch.schema();
    let columns = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let added = column(f, &rows)?;
            Ok(concat(&[batch.column(i).as_ref(), added.as_ref()])?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// One column of `rows` for field `f`.
fn column(f: &Field, rows: &[Row]) -> Result<ArrayRef> {
    let fill = if f.is_nullable() {
        ScalarValue::try_from(f.data_type())?
    } else {
        match f.data_type() {
            DataType::Utf8 => text(""),
            DataType::Boolean => ScalarValue::Boolean(Some(false)),
            DataType::List(_) => ScalarValue::try_from(f.data_type())?,
            dt => ScalarValue::new_zero(dt)?,
        }
    };
    let values: Vec<ScalarValue> = rows
        .iter()
        .map(|r| {
            r.get(f.name().as_str())
                .cloned()
                .unwrap_or_else(|| fill.clone())
        })
        .collect();
    if values.is_empty() {
        return Ok(datafusion::arrow::array::new_empty_array(f.data_type()));
    }
    let array = ScalarValue::iter_to_array(values)?;
    if array.data_type() == f.data_type() {
        Ok(array)
    } else {
        Ok(cast(&array, f.data_type())?)
    }
}

/// pg_class as datafusion-pg-catalog builds it plus `reloptions` (always NULL),
/// which SQLAlchemy's index reflection reads.
fn with_reloptions(schema: &SchemaRef) -> SchemaRef {
    if schema.column_with_name("reloptions").is_some() {
        return Arc::clone(schema);
    }
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(
        "reloptions",
        DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
        true,
    ));
    Arc::new(Schema::new(fields))
}

/// An `oid` column (PostgreSQL's type for these, so clients read numbers).
fn oid_col(name: &str) -> Field {
    oid_field(name, kind::OID, false)
}

fn int2_vec(name: &str) -> Field {
    Field::new(
        name,
        DataType::List(Arc::new(Field::new("item", DataType::Int16, true))),
        true,
    )
}

fn constraint_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        oid_col("oid"),
        Field::new("conname", DataType::Utf8, false),
        oid_col("connamespace"),
        Field::new("contype", DataType::Utf8, false),
        Field::new("condeferrable", DataType::Boolean, false),
        Field::new("condeferred", DataType::Boolean, false),
        Field::new("convalidated", DataType::Boolean, false),
        oid_col("conrelid"),
        oid_col("contypid"),
        oid_col("conindid"),
        oid_col("conparentid"),
        oid_col("confrelid"),
        Field::new("confupdtype", DataType::Utf8, false),
        Field::new("confdeltype", DataType::Utf8, false),
        Field::new("confmatchtype", DataType::Utf8, false),
        Field::new("conislocal", DataType::Boolean, false),
        Field::new("coninhcount", DataType::Int32, false),
        Field::new("connoinherit", DataType::Boolean, false),
        int2_vec("conkey"),
        int2_vec("confkey"),
        int2_vec("conpfeqop"),
        int2_vec("conppeqop"),
        int2_vec("conffeqop"),
        int2_vec("confdelsetcols"),
        int2_vec("conexclop"),
        Field::new("conbin", DataType::Utf8, true),
    ]))
}

fn index_schema() -> SchemaRef {
    let flag = |n: &str| Field::new(n, DataType::Boolean, false);
    Arc::new(Schema::new(vec![
        oid_col("indexrelid"),
        oid_col("indrelid"),
        Field::new("indnatts", DataType::Int16, false),
        Field::new("indnkeyatts", DataType::Int16, false),
        flag("indisunique"),
        flag("indnullsnotdistinct"),
        flag("indisprimary"),
        flag("indisexclusion"),
        flag("indimmediate"),
        flag("indisclustered"),
        flag("indisvalid"),
        flag("indcheckxmin"),
        flag("indisready"),
        flag("indislive"),
        flag("indisreplident"),
        int2_vec("indkey"),
        int2_vec("indcollation"),
        int2_vec("indclass"),
        Field::new("indoption", DataType::Utf8, false),
        Field::new("indexprs", DataType::Utf8, true),
        Field::new("indpred", DataType::Utf8, true),
    ]))
}

fn attrdef_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        oid_col("oid"),
        oid_col("adrelid"),
        Field::new("adnum", DataType::Int16, false),
        Field::new("adbin", DataType::Utf8, true),
    ]))
}

/// Registers `pg_get_indexdef`, `pg_get_constraintdef` and `pg_get_expr` reading
/// `definitions` (replacing datafusion-postgres's, which print empty strings), and
/// `pg_get_triggerdef`.
pub fn register(ctx: &SessionContext, definitions: &Arc<Definitions>) {
    for which in [
        Printer::IndexDef,
        Printer::ConstraintDef,
        Printer::Expr,
        Printer::TriggerDef,
    ] {
        ctx.register_udf(ScalarUDF::from(DefUdf {
            which,
            definitions: Arc::clone(definitions),
            signature: Signature::variadic_any(Volatility::Stable),
        }));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Printer {
    IndexDef,
    ConstraintDef,
    Expr,
    /// There are no triggers (pg_trigger is empty); psql asks when relhastriggers.
    TriggerDef,
}

#[derive(Debug)]
struct DefUdf {
    which: Printer,
    definitions: Arc<Definitions>,
    signature: Signature,
}

impl PartialEq for DefUdf {
    fn eq(&self, other: &Self) -> bool {
        self.which == other.which && Arc::ptr_eq(&self.definitions, &other.definitions)
    }
}
impl Eq for DefUdf {}
impl std::hash::Hash for DefUdf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.which.hash(state);
    }
}

impl ScalarUDFImpl for DefUdf {
    fn name(&self) -> &str {
        match self.which {
            Printer::IndexDef => "pg_get_indexdef",
            Printer::ConstraintDef => "pg_get_constraintdef",
            Printer::Expr => "pg_get_expr",
            Printer::TriggerDef => "pg_get_triggerdef",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let Some(first) = arrays.first() else {
            return Err(DataFusionError::Plan(format!(
                "{}() needs an argument",
                self.name()
            )));
        };
        if self.which == Printer::TriggerDef {
            return Ok(ColumnarValue::Array(
                datafusion::arrow::array::new_null_array(&DataType::Utf8, rows),
            ));
        }
        if self.which == Printer::Expr {
            // adbin already holds the printed expression.
            return Ok(ColumnarValue::Array(cast(first, &DataType::Utf8)?));
        }
        let oids = cast(first, &DataType::Int32)?;
        let oids = oids.as_primitive::<Int32Type>();
        let column = match arrays.get(1) {
            Some(c) if self.which == Printer::IndexDef => Some(
                cast(c, &DataType::Int32)?
                    .as_primitive::<Int32Type>()
                    .clone(),
            ),
            _ => None,
        };
        let out: StringArray = (0..rows)
            .map(|r| {
                if oids.is_null(r) {
                    return None;
                }
                match self.definitions.get(oids.value(r))? {
                    Definition::Constraint(def) => Some(def),
                    Definition::Index { def, columns } => {
                        let n = column.as_ref().map(|c| c.value(r)).unwrap_or(0);
                        if n <= 0 {
                            Some(def)
                        } else {
                            Some(
                                columns
                                    .get(usize::try_from(n - 1).ok()?)
                                    .map(String::as_str)
                                    .map(ident)
                                    .unwrap_or_default(),
                            )
                        }
                    }
                }
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids_are_stable_and_above_table_oids() {
        let a = fact_oid(&["i", "sales", "orders", "orders_pkey"]);
        assert_eq!(a, fact_oid(&["i", "sales", "orders", "orders_pkey"]));
        assert_ne!(a, fact_oid(&["c", "sales", "orders", "orders_pkey"]));
        assert!(a >= 1_000_000_000);
    }

    #[test]
    fn identifiers_are_quoted_like_postgres() {
        assert_eq!(ident("customer_id"), "customer_id");
        assert_eq!(ident("Mixed"), "\"Mixed\"");
        assert_eq!(ident("has space"), "\"has space\"");
    }
}
