//! MongoDB origins: collections as SQL tables, read through aggregation pipelines.
//!
//! Each dataset is a collection (optionally with `filters:` or a native `pipeline:`
//! in front) whose columns are declared or inferred by sampling ([`schema`]). Tables
//! join datafusion-federation with a provider of our own ([`MongoFederationProvider`]):
//! the largest MongoDB-only part of a plan reaches [`translate`], which turns as much
//! of it as means exactly the same into one pipeline (`$match`, `$project`, `$sort`,
//! `$skip`/`$limit`, `$group`, `$lookup`) run by [`exec::MongoExec`]; the rest runs
//! in DataFusion on top of it.

pub mod decode;
pub mod exec;
pub mod filter;
mod live;
pub mod schema;
mod translate;
mod write;

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::logical_expr::{TableProviderFilterPushDown, TableSource};
use datafusion::optimizer::optimizer::Optimizer;
use datafusion_federation::{
    FederatedTableProviderAdaptor, FederatedTableSource, FederationProvider,
};
use futures::TryStreamExt;
use mongodb::bson::{Bson, Document};
use mongodb::options::ClientOptions;
use mongodb::Client;
use switchyard_config::{DatasetSource, DeclaredColumn, FilterValue, MongoOrigin};
use switchyard_sqlstate::SqlState;
use tokio::sync::OnceCell;

use crate::{ConnectorError, Result};
use schema::MongoColumn;

pub use exec::{pipeline_json, MongoExec};

/// One MongoDB origin: its client (made on first use) and federation provider.
#[derive(Debug, Clone)]
pub struct MongoConnector {
    origin: String,
    settings: MongoOrigin,
    client: Arc<OnceCell<Client>>,
    provider: Arc<MongoFederationProvider>,
}

#[async_trait::async_trait]
impl crate::origin::Origin for MongoConnector {
    fn name(&self) -> &str {
        &self.origin
    }

    async fn table(&self, dataset: &switchyard_config::Dataset) -> Result<Arc<dyn TableProvider>> {
        self.federated(&dataset.qualified_name(), &dataset.source, &dataset.columns)
            .await
    }

    fn changes(&self) -> Option<crate::changes::SharedFeed> {
        Some(Arc::new(live::MongoFeed::new(self.clone())))
    }

    fn writes(&self) -> Option<crate::write::SharedWrites> {
        Some(Arc::new(write::MongoWrites::new(self.clone())))
    }

    fn native(&self) -> Option<crate::native::SharedNative> {
        Some(Arc::new(self.clone()))
    }
}

#[async_trait::async_trait]
impl crate::native::NativeQueries for MongoConnector {
    async fn aggregate(
        &self,
        dataset: &switchyard_config::Dataset,
        filters: Vec<Option<datafusion::logical_expr::Expr>>,
        stages: Vec<serde_json::Value>,
    ) -> Result<Vec<arrow::record_batch::RecordBatch>> {
        let mut tail = Vec::with_capacity(stages.len());
        for stage in stages {
            match Bson::try_from(stage) {
                Ok(Bson::Document(d)) => tail.push(d),
                _ => return Err(plan_error("each pipeline stage is a JSON object".into())),
            }
        }
        let local_name = dataset.qualified_name();
        let needs_columns = filters.iter().any(Option::is_some);
        let (collection, base, columns) = if needs_columns {
            self.resolve(&local_name, &dataset.source, &dataset.columns)
                .await?
        } else {
            let (name, base) = self.base(&local_name, &dataset.source)?;
            (self.collection(&name).await?, base, vec![])
        };
        let table = MongoTable {
            schema: schema::arrow_schema(&columns),
            collection: Arc::clone(&collection),
            base: vec![],
            columns,
        };
        let filters = if filters.is_empty() {
            vec![None]
        } else {
            filters
        };
        let mut docs = Vec::new();
        for filter in filters {
            let mut stages = base.clone();
            if let Some(e) = filter {
                let m = translate::table_filter(&table, &e).ok_or_else(|| {
                    ConnectorError::Origin {
                        origin: self.origin.clone(),
                        code: SqlState::FEATURE_NOT_SUPPORTED,
                        message: format!(
                            "{local_name}: the filter {e} has no exact MongoDB form; query the dataset with SQL"
                        ),
                    }
                })?;
                stages.push(mongodb::bson::doc! {"$match": m});
            }
            stages.extend(tail.iter().cloned());
            docs.extend(collection.run(stages).await?);
        }
        collection.documents_to_batches(&docs)
    }
}

impl MongoConnector {
    /// A connector for origin `name`; nothing is opened until a table is first used.
    pub fn new(name: &str, settings: MongoOrigin) -> Self {
        let provider = Arc::new(MongoFederationProvider::new(
            format!("mongodb:{name}/{}", settings.database),
            settings.pushdown,
        ));
        MongoConnector {
            origin: name.to_string(),
            settings,
            client: Arc::new(OnceCell::new()),
            provider,
        }
    }

    /// The driver client.
    pub async fn client(&self) -> Result<Client> {
        self.client
            .get_or_try_init(|| self.new_client())
            .await
            .cloned()
    }

    /// A client of its own (with its own pool of server sessions).
    pub(crate) async fn new_client(&self) -> Result<Client> {
        let mut options = ClientOptions::parse(&self.settings.url)
            .await
            .map_err(|e| error(&self.origin, e))?;
        options.app_name = Some("switchyard".into());
        // A dead origin fails its statements quickly instead of after 30 s.
        options.server_selection_timeout = Some(std::time::Duration::from_secs(5));
        options.connect_timeout = Some(std::time::Duration::from_secs(5));
        Client::with_options(options).map_err(|e| error(&self.origin, e))
    }

    /// The collection `name` of the origin's database.
    pub async fn collection(&self, name: &str) -> Result<Arc<MongoCollection>> {
        Ok(Arc::new(MongoCollection {
            origin: self.origin.clone(),
            database: self.settings.database.clone(),
            name: name.to_string(),
            client: self.client().await?,
        }))
    }

    /// A federated table for a dataset; `local_name` is `schema.table` as clients see it.
    async fn federated(
        &self,
        local_name: &str,
        source: &DatasetSource,
        declared: &[DeclaredColumn],
    ) -> Result<Arc<dyn TableProvider>> {
        let (collection, base, columns) = self.resolve(local_name, source, declared).await?;
        tracing::debug!(table = %local_name, columns = columns.len(), "mongodb columns");
        let table = Arc::new(MongoTable {
            schema: schema::arrow_schema(&columns),
            collection,
            base,
            columns,
        });
        let source = Arc::new(MongoSource {
            table,
            provider: Arc::clone(&self.provider),
        });
        Ok(Arc::new(FederatedTableProviderAdaptor::new(source)))
    }

    /// A dataset's collection and the stages in front of it (its filters or pipeline).
    fn base(&self, local_name: &str, source: &DatasetSource) -> Result<(String, Vec<Document>)> {
        Ok(match source {
            DatasetSource::Table { table, filters } => {
                let base = if filters.is_empty() {
                    vec![]
                } else {
                    let mut m = Document::new();
                    for (column, value) in filters {
                        m.insert(column.clone(), filter_value(value));
                    }
                    vec![mongodb::bson::doc! {"$match": m}]
                };
                (table.clone(), base)
            }
            DatasetSource::Pipeline {
                collection,
                pipeline,
            } => (collection.clone(), parse_stages(pipeline)?),
            DatasetSource::Query(_) => {
                return Err(ConnectorError::NoSchema {
                    origin: self.origin.clone(),
                    message: format!(
                        "dataset {local_name}: mongodb origins run pipelines, not SQL"
                    ),
                })
            }
        })
    }

    /// A dataset's collection, the stages in front of it and its columns.
    async fn resolve(
        &self,
        local_name: &str,
        source: &DatasetSource,
        declared: &[DeclaredColumn],
    ) -> Result<(Arc<MongoCollection>, Vec<Document>, Vec<MongoColumn>)> {
        let (collection, base) = self.base(local_name, source)?;
        let collection = self.collection(&collection).await?;
        let columns: Vec<MongoColumn> = if declared.is_empty() {
            let mut sample = base.clone();
            sample.push(mongodb::bson::doc! {"$limit": self.settings.sample_size as i64});
            let docs = collection.run(sample).await?;
            if docs.is_empty() {
                return Err(ConnectorError::NoSchema {
                    origin: self.origin.clone(),
                    message: format!(
                        "dataset {local_name}: collection {}.{} has no documents to infer columns from; declare them with columns: in the config",
                        self.settings.database, collection.name
                    ),
                });
            }
            schema::infer(&docs)
        } else {
            declared.iter().map(MongoColumn::from).collect()
        };
        Ok((collection, base, columns))
    }
}

/// A mistake in a native query, as a connector error.
fn plan_error(message: String) -> ConnectorError {
    ConnectorError::DataFusion(datafusion::error::DataFusionError::Plan(message))
}

/// Aggregation stages from Extended JSON text: an array of objects.
fn parse_stages(pipeline: &str) -> Result<Vec<Document>> {
    let json: serde_json::Value = serde_json::from_str(pipeline)
        .map_err(|e| plan_error(format!("pipeline is not JSON: {e}")))?;
    let Ok(Bson::Array(stages)) = Bson::try_from(json) else {
        return Err(plan_error("a pipeline is a JSON array of stages".into()));
    };
    stages
        .into_iter()
        .map(|s| match s {
            Bson::Document(d) => Ok(d),
            _ => Err(plan_error("each pipeline stage is a JSON object".into())),
        })
        .collect()
}

pub(crate) fn filter_value(v: &FilterValue) -> Bson {
    match v {
        FilterValue::Bool(b) => Bson::Boolean(*b),
        FilterValue::Int(n) => Bson::Int64(*n),
        FilterValue::Float(f) => Bson::Double(*f),
        FilterValue::Text(s) => Bson::String(s.clone()),
    }
}

/// A collection of an origin's database.
#[derive(Debug)]
pub struct MongoCollection {
    /// Origin name.
    pub origin: String,
    /// Database name.
    pub database: String,
    /// Collection name.
    pub name: String,
    client: Client,
}

impl MongoCollection {
    /// The driver's handle.
    pub fn handle(&self) -> mongodb::Collection<Document> {
        self.client.database(&self.database).collection(&self.name)
    }

    /// Runs a native `aggregate` (stages as Extended JSON) and returns Arrow batches
    /// with columns inferred from the result — for the step-graph API's native steps.
    pub async fn aggregate_json(
        &self,
        pipeline: &str,
    ) -> Result<Vec<arrow::record_batch::RecordBatch>> {
        let docs = self.run(parse_stages(pipeline)?).await?;
        self.documents_to_batches(&docs)
    }

    /// All documents `stages` return.
    async fn run(&self, stages: Vec<Document>) -> Result<Vec<Document>> {
        self.handle()
            .aggregate(stages)
            .await
            .map_err(|e| error(&self.origin, e))?
            .try_collect()
            .await
            .map_err(|e| error(&self.origin, e))
    }

    /// Runs a native `find` (filter and options as Extended JSON, e.g.
    /// `{"filter": {...}, "projection": {...}, "sort": {...}, "limit": 10}`).
    pub async fn find_json(&self, command: &str) -> Result<Vec<arrow::record_batch::RecordBatch>> {
        let json: serde_json::Value = serde_json::from_str(command)
            .map_err(|e| plan_error(format!("find is not JSON: {e}")))?;
        let Ok(Bson::Document(cmd)) = Bson::try_from(json) else {
            return Err(plan_error("find takes a JSON object".into()));
        };
        let mut stages = Vec::new();
        if let Ok(f) = cmd.get_document("filter") {
            stages.push(mongodb::bson::doc! {"$match": f.clone()});
        }
        if let Ok(s) = cmd.get_document("sort") {
            stages.push(mongodb::bson::doc! {"$sort": s.clone()});
        }
        if let Some(n) = cmd.get("skip").and_then(Bson::as_i64_lenient) {
            stages.push(mongodb::bson::doc! {"$skip": n});
        }
        if let Some(n) = cmd.get("limit").and_then(Bson::as_i64_lenient) {
            stages.push(mongodb::bson::doc! {"$limit": n});
        }
        if let Ok(p) = cmd.get_document("projection") {
            stages.push(mongodb::bson::doc! {"$project": p.clone()});
        }
        let docs = self.run(stages).await?;
        self.documents_to_batches(&docs)
    }

    pub(crate) fn documents_to_batches(
        &self,
        docs: &[Document],
    ) -> Result<Vec<arrow::record_batch::RecordBatch>> {
        let mut columns = schema::infer(docs);
        // A native query's result is read whole, so its columns are known from every
        // document: a column whose documents disagree (an array here, text there) is
        // read as JSON rather than failing the query.
        loop {
            let schema = schema::arrow_schema(&columns);
            let targets: Vec<decode::Target> = columns
                .iter()
                .map(|c| decode::Target {
                    path: c.path.clone(),
                    json: c.sql_type == switchyard_config::ColumnType::Jsonb,
                })
                .collect();
            match decode::batch(&self.origin, docs, &schema, &targets) {
                Ok(batch) => return Ok(vec![batch]),
                Err(ConnectorError::WrongType { column, .. })
                    if columns.iter().any(|c| {
                        c.name == column && c.sql_type != switchyard_config::ColumnType::Jsonb
                    }) =>
                {
                    for c in columns.iter_mut().filter(|c| c.name == column) {
                        c.sql_type = switchyard_config::ColumnType::Jsonb;
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

trait LenientInt {
    fn as_i64_lenient(&self) -> Option<i64>;
}

impl LenientInt for Bson {
    fn as_i64_lenient(&self) -> Option<i64> {
        match self {
            Bson::Int32(n) => Some(*n as i64),
            Bson::Int64(n) => Some(*n),
            Bson::Double(f) if f.fract() == 0.0 => Some(*f as i64),
            _ => None,
        }
    }
}

/// A dataset: its collection, the stages in front (filters or a native pipeline)
/// and its columns.
#[derive(Debug)]
pub struct MongoTable {
    collection: Arc<MongoCollection>,
    base: Vec<Document>,
    columns: Vec<MongoColumn>,
    schema: SchemaRef,
}

/// The federation source of a [`MongoTable`].
#[derive(Debug, Clone)]
struct MongoSource {
    table: Arc<MongoTable>,
    provider: Arc<MongoFederationProvider>,
}

impl TableSource for MongoSource {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.table.schema)
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&datafusion::logical_expr::Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if translate::scan_filter_translates(&self.table, f) {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }
}

impl FederatedTableSource for MongoSource {
    fn federation_provider(&self) -> Arc<dyn FederationProvider> {
        Arc::clone(&self.provider) as Arc<dyn FederationProvider>
    }
}

/// Federation provider of one MongoDB database: plans joined by it are one pipeline.
#[derive(Debug)]
pub struct MongoFederationProvider {
    context: String,
    optimizer: Arc<Optimizer>,
}

impl MongoFederationProvider {
    fn new(context: String, pushdown: bool) -> Self {
        MongoFederationProvider {
            context,
            optimizer: Arc::new(Optimizer::with_rules(vec![Arc::new(
                translate::FederateMongo { pushdown },
            )])),
        }
    }
}

impl FederationProvider for MongoFederationProvider {
    fn name(&self) -> &str {
        "mongodb"
    }

    fn compute_context(&self) -> Option<String> {
        Some(self.context.clone())
    }

    fn optimizer(&self) -> Option<Arc<Optimizer>> {
        Some(Arc::clone(&self.optimizer))
    }
}

/// A session id (`lsid`, as sessions and change events carry it) as text: the
/// hex of its UUID.
pub(crate) fn session_name(lsid: &Document) -> Option<String> {
    match lsid.get("id")? {
        mongodb::bson::Bson::Binary(b) => {
            Some(b.bytes.iter().map(|x| format!("{x:02x}")).collect())
        }
        _ => None,
    }
}

/// A driver error as a connector error.
pub(crate) fn error(origin: &str, e: mongodb::error::Error) -> ConnectorError {
    use mongodb::error::ErrorKind;
    match e.kind.as_ref() {
        ErrorKind::ServerSelection { message, .. } => ConnectorError::Unreachable {
            origin: origin.to_string(),
            message: message.clone(),
        },
        ErrorKind::Io(io) => ConnectorError::ConnectionLost {
            origin: origin.to_string(),
            message: io.to_string(),
        },
        // A duplicate key is PostgreSQL's unique_violation.
        ErrorKind::Command(c) if c.code == 11000 => ConnectorError::Origin {
            origin: origin.to_string(),
            code: SqlState::UNIQUE_VIOLATION,
            message: format!("MongoDB error {} ({}): {}", c.code, c.code_name, c.message),
        },
        ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) if w.code == 11000 => {
            ConnectorError::Origin {
                origin: origin.to_string(),
                code: SqlState::UNIQUE_VIOLATION,
                message: format!("duplicate key: {}", w.message),
            }
        }
        ErrorKind::InsertMany(m)
            if m.write_errors
                .as_ref()
                .is_some_and(|w| w.iter().any(|e| e.code == 11000)) =>
        {
            ConnectorError::Origin {
                origin: origin.to_string(),
                code: SqlState::UNIQUE_VIOLATION,
                message: format!("duplicate key: {e}"),
            }
        }
        ErrorKind::Command(c) => ConnectorError::Origin {
            origin: origin.to_string(),
            // MongoDB's codes are not SQLSTATEs: report them in the message.
            code: SqlState::INTERNAL_ERROR,
            message: format!("MongoDB error {} ({}): {}", c.code, c.code_name, c.message),
        },
        _ => ConnectorError::Origin {
            origin: origin.to_string(),
            code: SqlState::INTERNAL_ERROR,
            message: e.to_string(),
        },
    }
}
