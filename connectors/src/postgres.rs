//! PostgreSQL origins: our own small connection pool over tokio-postgres and the
//! federation executor that runs each origin's part of a plan as one SQL statement.
//!
//! We keep the pool ourselves (rather than datafusion-table-providers' bb8 pool) so
//! that an unreachable origin fails within the connect timeout with SQLSTATE 08001
//! instead of a 30 s checkout timeout, a broken connection reports 08006, and a
//! statement dropped mid-stream (cancel, LIMIT satisfied) cancels its backend query.
//! Rows are converted to Arrow by [`crate::pg_rows`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, IntervalUnit, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{PhysicalExpr, SendableRecordBatchStream};
use datafusion::sql::sqlparser::ast;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect as PgParseDialect;
use datafusion::sql::unparser::dialect::{Dialect, PostgreSqlDialect};
use datafusion_federation::sql::{
    AstAnalyzer, RemoteTable, RemoteTableRef, SQLExecutor, SQLFederationProvider, SQLTableSource,
};
use datafusion_federation::FederatedTableProviderAdaptor;
use futures::StreamExt;
use switchyard_config::{DatasetSource, PostgresOrigin};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls, Row};

use crate::derived_names::OriginTable;
use crate::query_table::QueryTable;
use crate::{ConnectorError, Result};

/// Rows per Arrow batch sent up the plan; small enough that the first rows reach
/// the client quickly, large enough to amortise per-batch work.
const BATCH_ROWS: usize = 4096;
/// How long connecting to an origin may take before the statement fails with 08001.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A pool of connections to one PostgreSQL origin.
pub struct PgPool {
    origin: String,
    settings: PostgresOrigin,
    idle: Mutex<Vec<Client>>,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for PgPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgPool")
            .field("origin", &self.origin)
            .field("settings", &self.settings)
            .finish()
    }
}

/// A connection checked out of a [`PgPool`]; goes back to the pool when dropped,
/// unless it broke or was abandoned mid-statement.
struct Pooled {
    client: Option<Client>,
    pool: Arc<PgPool>,
    /// Set while a statement's rows are being read.
    busy: bool,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        if self.busy {
            // Abandoned mid-statement: stop the backend's work, then drop the
            // connection, since unread rows may still be in flight on it.
            let token = client.cancel_token();
            let origin = self.pool.origin.clone();
            tracing::debug!(%origin, "cancelling abandoned origin statement");
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    if let Err(e) = token.cancel_query(NoTls).await {
                        tracing::warn!(%origin, error = %e, "could not cancel origin statement");
                    }
                    drop(client);
                });
            }
        } else if !client.is_closed() {
            self.pool.idle.lock().expect("pool lock").push(client);
        }
    }
}

impl PgPool {
    /// A pool for `settings`; connections are opened on first use.
    pub fn new(origin: &str, settings: PostgresOrigin) -> Arc<Self> {
        let permits = Arc::new(Semaphore::new(settings.pool_size.max(1) as usize));
        Arc::new(PgPool {
            origin: origin.to_string(),
            settings,
            idle: Mutex::new(Vec::new()),
            permits,
        })
    }

    /// Origin name.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Number of idle pooled connections (for tests and metrics).
    pub fn idle_connections(&self) -> usize {
        self.idle.lock().expect("pool lock").len()
    }

    async fn checkout(self: &Arc<Self>) -> Result<Pooled> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .expect("semaphore never closes");
        loop {
            let candidate = self.idle.lock().expect("pool lock").pop();
            match candidate {
                Some(c) if !c.is_closed() => {
                    return Ok(Pooled {
                        client: Some(c),
                        pool: Arc::clone(self),
                        busy: false,
                        _permit: permit,
                    })
                }
                Some(_) => continue,
                None => break,
            }
        }
        let client = self.connect().await?;
        Ok(Pooled {
            client: Some(client),
            pool: Arc::clone(self),
            busy: false,
            _permit: permit,
        })
    }

    async fn connect(&self) -> Result<Client> {
        let s = &self.settings;
        let mut config = tokio_postgres::Config::new();
        config
            .host(&s.host)
            .port(s.port)
            .dbname(&s.database)
            .user(&s.user)
            .application_name("switchyard")
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(t) = s.statement_timeout {
            // The origin enforces the per-origin guardrail itself (57014).
            config.options(format!("-c statement_timeout={}", t.as_millis()));
        }
        if let Some(pw) = &s.password {
            config.password(pw);
        }
        let client = if s.sslmode == "disable" || s.sslmode == "prefer" {
            // `prefer` without a TLS connector means plaintext, as libpq does when the server has no TLS.
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
            self.open(&config, NoTls).await?
        } else {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
            let verify = s.sslmode == "verify-full" || s.sslmode == "verify-ca";
            let tls = native_tls::TlsConnector::builder()
                .danger_accept_invalid_certs(!verify)
                .danger_accept_invalid_hostnames(s.sslmode != "verify-full")
                .build()
                .map_err(|e| self.unreachable(&e))?;
            self.open(&config, postgres_native_tls::MakeTlsConnector::new(tls))
                .await?
        };
        tracing::debug!(origin = %self.origin, "opened origin connection");
        Ok(client)
    }

    /// Connects with `tls` and drives the connection in its own task.
    async fn open<T>(&self, config: &tokio_postgres::Config, tls: T) -> Result<Client>
    where
        T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
        T::Stream: Send + 'static,
    {
        let (client, conn) = config
            .connect(tls)
            .await
            .map_err(|e| self.map_connect_error(e))?;
        let origin = self.origin.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%origin, error = %e, "origin connection ended");
            }
        });
        Ok(client)
    }

    fn unreachable(&self, e: &dyn std::fmt::Display) -> ConnectorError {
        let s = &self.settings;
        ConnectorError::Unreachable {
            origin: self.origin.clone(),
            message: format!("{}:{}: {e}", s.host, s.port),
        }
    }

    fn map_connect_error(&self, e: tokio_postgres::Error) -> ConnectorError {
        match e.as_db_error() {
            // The server answered but refused us (bad password, no such database): pass its code on.
            Some(db) => ConnectorError::Origin {
                origin: self.origin.clone(),
                code: db.code().code().to_string(),
                message: db.message().to_string(),
            },
            None => self.unreachable(&e),
        }
    }

    fn query_error(&self, e: tokio_postgres::Error) -> ConnectorError {
        match e.as_db_error() {
            Some(db) => ConnectorError::Origin {
                origin: self.origin.clone(),
                code: db.code().code().to_string(),
                message: db.message().to_string(),
            },
            None => ConnectorError::ConnectionLost {
                origin: self.origin.clone(),
                message: e.to_string(),
            },
        }
    }

    /// The Arrow schema of the rows `sql` returns, from the origin's own description of it.
    pub async fn describe(self: &Arc<Self>, sql: &str) -> Result<SchemaRef> {
        let conn = self.checkout().await?;
        let client = conn.client.as_ref().expect("checked-out connection");
        let statement = client.prepare(sql).await.map_err(|e| self.query_error(e))?;
        let mut fields = Vec::new();
        for column in statement.columns() {
            let data_type =
                arrow_type(column.type_(), column.type_modifier()).ok_or_else(|| {
                    ConnectorError::UnsupportedType {
                        origin: self.origin.clone(),
                        column: column.name().to_string(),
                        type_name: column.type_().name().to_string(),
                    }
                })?;
            fields.push(field(
                column.name(),
                column.type_(),
                column.type_modifier(),
                data_type,
            ));
        }
        Ok(Arc::new(Schema::new(fields)))
    }

    /// The rows of a small catalog query taking one text parameter.
    pub(crate) async fn query(self: &Arc<Self>, sql: &str, param: &str) -> Result<Vec<Row>> {
        let conn = self.checkout().await?;
        let client = conn.client.as_ref().expect("checked-out connection");
        client
            .query(sql, &[&param])
            .await
            .map_err(|e| self.query_error(e))
    }

    /// Streams the rows of `sql` as Arrow batches of `schema`.
    pub fn query_stream(
        self: &Arc<Self>,
        sql: String,
        schema: SchemaRef,
    ) -> SendableRecordBatchStream {
        let pool = Arc::clone(self);
        let out_schema = Arc::clone(&schema);
        tracing::debug!(origin = %pool.origin, %sql, "origin query");
        let stream = futures::stream::once(async move {
            let mut conn = pool.checkout().await.map_err(DataFusionError::from)?;
            let client = conn.client.as_ref().expect("checked-out connection");
            let rows = client
                .query_raw(sql.as_str(), std::iter::empty::<&(dyn ToSql + Sync)>())
                .await
                .map_err(|e| DataFusionError::from(pool.query_error(e)))?;
            conn.busy = true;
            let state = (conn, Box::pin(rows), schema, false);
            Ok::<_, DataFusionError>(futures::stream::try_unfold(
                state,
                |(mut conn, mut rows, schema, done)| async move {
                    if done {
                        return Ok(None);
                    }
                    let mut chunk: Vec<Row> = Vec::with_capacity(BATCH_ROWS);
                    let mut finished = false;
                    while chunk.len() < BATCH_ROWS {
                        match rows.next().await {
                            Some(Ok(row)) => chunk.push(row),
                            Some(Err(e)) => {
                                conn.busy = false;
                                conn.client.take();
                                return Err(DataFusionError::from(conn.pool.query_error(e)));
                            }
                            None => {
                                finished = true;
                                break;
                            }
                        }
                    }
                    if finished {
                        conn.busy = false;
                    }
                    if chunk.is_empty() {
                        return Ok(None);
                    }
                    let batch = to_batch(&chunk, &schema)?;
                    Ok(Some((batch, (conn, rows, schema, finished))))
                },
            ))
        })
        .flat_map(|r| match r {
            Ok(s) => s.boxed(),
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        });
        Box::pin(RecordBatchStreamAdapter::new(out_schema, stream))
    }
}

/// Converts rows to a batch of exactly `schema` (types cast by position where the
/// origin's result differs, e.g. a count PostgreSQL sends as int8).
fn to_batch(rows: &[Row], schema: &SchemaRef) -> DfResult<RecordBatch> {
    let Some(first) = rows.first() else {
        return Ok(RecordBatch::new_empty(Arc::clone(schema)));
    };
    if first.columns().len() != schema.fields().len() {
        return Err(DataFusionError::Internal(format!(
            "origin returned {} columns, expected {}",
            first.columns().len(),
            schema.fields().len()
        )));
    }
    let columns = first
        .columns()
        .iter()
        .zip(schema.fields())
        .enumerate()
        .map(|(i, (column, field))| {
            let array = crate::pg_rows::column(rows, i, column.type_(), field.data_type())?;
            crate::as_planned(array, field.data_type())
        })
        .collect::<DfResult<Vec<_>>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// Field metadata naming the PostgreSQL type of a column Arrow holds as text
/// (`uuid`, `json`, `jsonb`, `varchar`, `bpchar`, `name`), so that the front door
/// describes it as that type.
pub const PG_TYPE_KEY: &str = "switchyard.pg_type";

/// Field metadata holding a PostgreSQL column's type modifier (`numeric(12,3)`,
/// `varchar(20)`), for the catalog's `atttypmod`.
pub const PG_TYPMOD_KEY: &str = "switchyard.pg_typmod";

/// The field for a column of PostgreSQL type `t` with type modifier `typmod`.
pub fn field(name: &str, t: &Type, typmod: i32, data_type: DataType) -> Field {
    let mut metadata = std::collections::HashMap::new();
    if matches!(
        *t,
        Type::UUID | Type::JSON | Type::JSONB | Type::VARCHAR | Type::BPCHAR | Type::NAME
    ) {
        metadata.insert(PG_TYPE_KEY.to_string(), t.name().to_string());
    }
    if typmod >= 0 {
        metadata.insert(PG_TYPMOD_KEY.to_string(), typmod.to_string());
    }
    Field::new(name, data_type, true).with_metadata(metadata)
}

/// The Arrow type Switchyard uses for a PostgreSQL type (None: not supported yet).
/// Kept in step with [`crate::pg_rows`], which decodes the values.
pub fn arrow_type(t: &Type, type_modifier: i32) -> Option<DataType> {
    let list = |inner: DataType| DataType::List(Arc::new(Field::new("item", inner, true)));
    Some(match *t {
        Type::BOOL => DataType::Boolean,
        Type::INT2 => DataType::Int16,
        Type::INT4 => DataType::Int32,
        Type::INT8 => DataType::Int64,
        Type::OID => DataType::UInt32,
        Type::FLOAT4 => DataType::Float32,
        Type::FLOAT8 => DataType::Float64,
        Type::TEXT
        | Type::VARCHAR
        | Type::BPCHAR
        | Type::NAME
        | Type::UUID
        | Type::JSON
        | Type::JSONB => DataType::Utf8,
        Type::BYTEA => DataType::Binary,
        Type::DATE => DataType::Date32,
        Type::TIME => DataType::Time64(TimeUnit::Nanosecond),
        Type::TIMESTAMP => DataType::Timestamp(TimeUnit::Nanosecond, None),
        Type::TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
        Type::INTERVAL => DataType::Interval(IntervalUnit::MonthDayNano),
        Type::NUMERIC => numeric_type(type_modifier),
        Type::INT2_ARRAY => list(DataType::Int16),
        Type::INT4_ARRAY => list(DataType::Int32),
        Type::INT8_ARRAY => list(DataType::Int64),
        Type::FLOAT4_ARRAY => list(DataType::Float32),
        Type::FLOAT8_ARRAY => list(DataType::Float64),
        Type::TEXT_ARRAY
        | Type::VARCHAR_ARRAY
        | Type::BPCHAR_ARRAY
        | Type::NAME_ARRAY
        | Type::UUID_ARRAY
        | Type::JSON_ARRAY
        | Type::JSONB_ARRAY => list(DataType::Utf8),
        Type::BOOL_ARRAY => list(DataType::Boolean),
        Type::BYTEA_ARRAY => list(DataType::Binary),
        Type::DATE_ARRAY => list(DataType::Date32),
        Type::TIMESTAMP_ARRAY => list(DataType::Timestamp(TimeUnit::Nanosecond, None)),
        Type::TIMESTAMPTZ_ARRAY => list(DataType::Timestamp(
            TimeUnit::Nanosecond,
            Some("UTC".into()),
        )),
        Type::INTERVAL_ARRAY => list(DataType::Interval(IntervalUnit::MonthDayNano)),
        Type::NUMERIC_ARRAY => list(numeric_type(type_modifier)),
        _ => return None,
    })
}

/// DataFusion writes a binary literal as `X'dead'`, which PostgreSQL reads as a bit
/// string; `'\xdead'::bytea` is the bytea it means.
fn bytea_literal(e: &mut ast::Expr) {
    if let ast::Expr::Value(v) = e {
        if let ast::Value::HexStringLiteral(hex) = &v.value {
            *e = ast::Expr::Cast {
                kind: ast::CastKind::DoubleColon,
                expr: Box::new(ast::Expr::value(ast::Value::SingleQuotedString(format!(
                    "\\x{hex}"
                )))),
                data_type: ast::DataType::Bytea,
                array: false,
                format: None,
            };
        }
    }
}

/// numeric(p, s) keeps its precision and scale; unconstrained numeric gets Decimal128(38, 10).
fn numeric_type(type_modifier: i32) -> DataType {
    if type_modifier >= 4 {
        let m = type_modifier - 4;
        let precision = ((m >> 16) & 0xffff) as u8;
        let scale = (m & 0xffff) as i8;
        if (1..=38).contains(&precision) {
            return DataType::Decimal128(precision, scale);
        }
    }
    DataType::Decimal128(38, 10)
}

/// The federation executor for one PostgreSQL origin.
#[derive(Debug)]
pub struct PgExecutor {
    pool: Arc<PgPool>,
    context: String,
}

impl PgExecutor {
    /// An executor running SQL on `pool`.
    pub fn new(pool: Arc<PgPool>) -> Self {
        let s = &pool.settings;
        // Federation merges subplans whose executors share name and context into one
        // remote statement: the context must identify the database, not just the origin name.
        let context = format!("postgres://{}@{}:{}/{}", s.user, s.host, s.port, s.database);
        PgExecutor { pool, context }
    }
}

#[async_trait]
impl SQLExecutor for PgExecutor {
    fn name(&self) -> &str {
        "postgres"
    }

    fn compute_context(&self) -> Option<String> {
        Some(self.context.clone())
    }

    fn dialect(&self) -> Arc<dyn Dialect> {
        Arc::new(PostgreSqlDialect {})
    }

    fn ast_analyzer(&self) -> Option<AstAnalyzer> {
        Some(Box::new(|mut statement: ast::Statement| {
            let _ = ast::visit_expressions_mut(&mut statement, |e| {
                bytea_literal(e);
                std::ops::ControlFlow::<()>::Continue(())
            });
            Ok(statement)
        }))
    }

    fn execute(
        &self,
        query: &str,
        schema: SchemaRef,
        _filters: &[Arc<dyn PhysicalExpr>],
    ) -> DfResult<SendableRecordBatchStream> {
        Ok(self.pool.query_stream(query.to_string(), schema))
    }

    async fn table_names(&self) -> DfResult<Vec<String>> {
        Err(DataFusionError::NotImplemented(
            "listing origin tables; datasets name them in the config".into(),
        ))
    }

    async fn get_table_schema(&self, table_name: &str) -> DfResult<SchemaRef> {
        Ok(self
            .pool
            .describe(&format!("SELECT * FROM {table_name}"))
            .await?)
    }
}

/// One PostgreSQL origin: its pool and federation provider.
#[derive(Debug)]
pub struct PostgresConnector {
    pool: Arc<PgPool>,
    provider: Arc<SQLFederationProvider>,
}

impl PostgresConnector {
    /// A connector for origin `name`; nothing is opened until a table is first used.
    pub fn new(name: &str, settings: PostgresOrigin) -> Self {
        let pool = PgPool::new(name, settings);
        let provider = Arc::new(SQLFederationProvider::new(Arc::new(PgExecutor::new(
            Arc::clone(&pool),
        ))));
        PostgresConnector { pool, provider }
    }

    /// The connection pool.
    pub fn pool(&self) -> &Arc<PgPool> {
        &self.pool
    }

    /// A federated table for a dataset; `local_name` is `schema.table` as clients see it.
    pub async fn table(
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
                        ConnectorError::Origin { code, .. } if code == "42P01" => {
                            ConnectorError::NotFound {
                                origin: self.pool.origin.clone(),
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

/// The name federation writes for a query dataset before it is replaced by the query.
pub(crate) fn placeholder(local_name: &str) -> String {
    format!("sy_{}", local_name.replace('.', "_"))
}

/// `a` or `a.b` as a table reference (names are taken literally, not case-folded).
pub(crate) fn parse_table_name(name: &str) -> TableReference {
    match name.split_once('.') {
        Some((schema, table)) => TableReference::partial(schema, table),
        None => TableReference::bare(name),
    }
}

/// The reference with each part double-quoted.
pub(crate) fn quoted(reference: &TableReference) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    match reference.schema() {
        Some(schema) => format!("{}.{}", q(schema), q(reference.table())),
        None => q(reference.table()),
    }
}

/// `SELECT * FROM <table> WHERE "col" = <literal> AND ...` for a dataset's `filters:`.
pub(crate) fn filtered_table_sql(
    table: &str,
    filters: &[(String, switchyard_config::FilterValue)],
) -> String {
    use switchyard_config::FilterValue;
    let conditions: Vec<String> = filters
        .iter()
        .map(|(col, v)| {
            let literal = match v {
                FilterValue::Bool(b) => b.to_string().to_uppercase(),
                FilterValue::Int(i) => i.to_string(),
                FilterValue::Float(f) => f.to_string(),
                FilterValue::Text(s) => format!("'{}'", s.replace('\'', "''")),
            };
            format!("\"{}\" = {literal}", col.replace('"', "\"\""))
        })
        .collect();
    format!("SELECT * FROM {table} WHERE {}", conditions.join(" AND "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_config::FilterValue;

    #[test]
    fn filters_are_quoted_literals() {
        let sql = filtered_table_sql(
            "\"public\".\"t\"",
            &[
                ("status".into(), FilterValue::Int(1)),
                ("name".into(), FilterValue::Text("o'brien".into())),
            ],
        );
        assert_eq!(
            sql,
            "SELECT * FROM \"public\".\"t\" WHERE \"status\" = 1 AND \"name\" = 'o''brien'"
        );
    }

    #[test]
    fn numeric_keeps_precision_and_scale() {
        assert_eq!(
            numeric_type((12 << 16 | 2) + 4),
            DataType::Decimal128(12, 2)
        );
        assert_eq!(numeric_type(-1), DataType::Decimal128(38, 10));
    }
}
