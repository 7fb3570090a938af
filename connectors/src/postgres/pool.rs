//! The connection pool of one PostgreSQL origin, our own over tokio-postgres.
//!
//! We keep the pool ourselves (rather than datafusion-table-providers' bb8 pool) so
//! that an unreachable origin fails within the connect timeout with SQLSTATE 08001
//! instead of a 30 s checkout timeout, a broken connection reports 08006, and a
//! statement dropped mid-stream (cancel, LIMIT satisfied) cancels its backend query.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::StreamExt;
use postgres_native_tls::MakeTlsConnector;
use switchyard_config::{PostgresOrigin, SslMode};
use switchyard_sqlstate::SqlState;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row};

use super::types::{arrow_type, field};
use crate::{ConnectorError, Result};

/// Rows per Arrow batch sent up the plan; small enough that the first rows reach
/// the client quickly, large enough to amortise per-batch work.
const BATCH_ROWS: usize = 4096;
/// The session settings every origin connection runs with, whatever the origin's,
/// database's or role's defaults: the SQL Switchyard sends and the text it reads
/// back (casts to text, intervals) mean what its answers assume. Startup options
/// outrank `ALTER ROLE/DATABASE ... SET`, so a role defaulting to another TimeZone
/// still computes `::date`, `date_trunc` and text casts in UTC.
pub(crate) const PINNED_SETTINGS: &[(&str, &str)] = &[
    ("TimeZone", "UTC"),
    ("DateStyle", "ISO,MDY"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"),
    ("standard_conforming_strings", "on"),
    ("bytea_output", "hex"),
];

/// How long connecting to an origin may take before the statement fails with 08001.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A pool of connections to one PostgreSQL origin.
pub struct PgPool {
    origin: String,
    settings: PostgresOrigin,
    /// The TLS connector of `settings.sslmode`, for connections and their cancel
    /// requests alike (a cancel request to a TLS origin must use TLS too).
    tls: Option<MakeTlsConnector>,
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
            let tls = self.pool.tls.clone();
            tracing::debug!(%origin, "cancelling abandoned origin statement");
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let cancelled = match tls {
                        Some(tls) => token.cancel_query(tls).await,
                        None => token.cancel_query(NoTls).await,
                    };
                    if let Err(e) = cancelled {
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

/// A connection a transaction keeps from `BEGIN` to its end: released to the pool
/// after a clean end, discarded (closed, which rolls back) otherwise.
pub(crate) struct Dedicated {
    conn: Pooled,
    /// Its transaction ended cleanly: it may go back to the pool.
    released: bool,
}

impl Drop for Dedicated {
    fn drop(&mut self) {
        if !self.released {
            // Possibly mid-transaction: closing it makes the origin roll back.
            self.conn.client.take();
        }
    }
}

impl std::fmt::Debug for Dedicated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dedicated")
            .field("origin", &self.conn.pool.origin)
            .finish()
    }
}

impl Dedicated {
    fn client(&self) -> &Client {
        self.conn
            .client
            .as_ref()
            .expect("a dedicated connection is open")
    }

    /// Runs statements without results.
    pub(crate) async fn batch_execute(&self, sql: &str) -> Result<()> {
        self.client()
            .batch_execute(sql)
            .await
            .map_err(|e| self.conn.pool.query_error(e))
    }

    /// Runs `sql` (statements separated by `;`) by the simple protocol; the
    /// first column of each row returned, as text.
    pub(crate) async fn simple_rows(&self, sql: &str) -> Result<Vec<Option<String>>> {
        let messages = self
            .client()
            .simple_query(sql)
            .await
            .map_err(|e| self.conn.pool.query_error(e))?;
        Ok(messages
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_string)),
                _ => None,
            })
            .collect())
    }

    /// Runs one statement; the rows it changed. Typed (with no parameters): one
    /// round trip, where a prepared statement costs two.
    pub(crate) async fn execute(&self, sql: &str) -> Result<u64> {
        self.client()
            .execute_typed(sql, &[])
            .await
            .map_err(|e| self.conn.pool.query_error(e))
    }

    /// Runs one statement returning rows of `schema` (by position).
    pub(crate) async fn query(&self, sql: &str, schema: &SchemaRef) -> Result<RecordBatch> {
        let rows = self
            .client()
            .query_typed(sql, &[])
            .await
            .map_err(|e| self.conn.pool.query_error(e))?;
        Ok(to_batch(&rows, schema)?)
    }

    /// Streams the rows of `sql` as Arrow batches of `schema` (a read inside the
    /// transaction). A stream dropped early leaves its rows to be discarded by the
    /// connection before its next statement.
    pub(crate) fn query_stream(
        self: &Arc<Self>,
        sql: String,
        schema: SchemaRef,
    ) -> SendableRecordBatchStream {
        let conn = Arc::clone(self);
        let out_schema = Arc::clone(&schema);
        tracing::debug!(origin = %conn.conn.pool.origin, %sql, "origin query in a transaction");
        let stream = futures::stream::once(async move {
            let rows = conn
                .client()
                .query_typed_raw(
                    sql.as_str(),
                    std::iter::empty::<(&(dyn ToSql + Sync), tokio_postgres::types::Type)>(),
                )
                .await
                .map_err(|e| DataFusionError::from(conn.conn.pool.query_error(e)))?;
            let state = (conn, Box::pin(rows), schema, false);
            Ok::<_, DataFusionError>(futures::stream::try_unfold(
                state,
                |(conn, mut rows, schema, done)| async move {
                    if done {
                        return Ok(None);
                    }
                    let (chunk, finished) = next_chunk(&mut rows)
                        .await
                        .map_err(|e| DataFusionError::from(conn.conn.pool.query_error(e)))?;
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

    /// The pool it came from.
    pub(crate) fn pool(&self) -> &Arc<PgPool> {
        &self.conn.pool
    }

    /// Back to the pool.
    pub(crate) fn release(mut self) {
        self.released = true;
    }

    /// Closed instead of pooled.
    pub(crate) fn discard(self) {}
}

impl PgPool {
    /// A connection of the pool kept by one transaction.
    pub(crate) async fn dedicated(self: &Arc<Self>) -> Result<Dedicated> {
        Ok(Dedicated {
            conn: self.checkout().await?,
            released: false,
        })
    }

    /// A pool for `settings`; connections are opened on first use.
    pub fn new(origin: &str, settings: PostgresOrigin) -> Result<Arc<Self>> {
        let permits = Arc::new(Semaphore::new(settings.pool_size.max(1) as usize));
        let tls = if settings.sslmode.uses_tls() {
            let connector = native_tls::TlsConnector::builder()
                .danger_accept_invalid_certs(!matches!(
                    settings.sslmode,
                    SslMode::VerifyCa | SslMode::VerifyFull
                ))
                .danger_accept_invalid_hostnames(settings.sslmode != SslMode::VerifyFull)
                .build()
                .map_err(|e| ConnectorError::Unreachable {
                    origin: origin.to_string(),
                    message: format!("TLS setup: {e}"),
                })?;
            Some(MakeTlsConnector::new(connector))
        } else {
            None
        };
        Ok(Arc::new(PgPool {
            origin: origin.to_string(),
            settings,
            tls,
            idle: Mutex::new(Vec::new()),
            permits,
        }))
    }

    /// Origin name.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// How the origin is reached.
    pub(crate) fn settings(&self) -> &PostgresOrigin {
        &self.settings
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
        let mut options: Vec<String> = PINNED_SETTINGS
            .iter()
            .map(|(name, value)| format!("-c {name}={value}"))
            .collect();
        if let Some(t) = s.statement_timeout {
            // The origin enforces the per-origin guardrail itself (57014).
            options.push(format!("-c statement_timeout={}", t.as_millis()));
        }
        config.options(options.join(" "));
        if let Some(pw) = &s.password {
            config.password(pw);
        }
        let client = match &self.tls {
            Some(tls) => {
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                self.open(&config, tls.clone()).await?
            }
            None => {
                // `prefer` without a TLS connector means plaintext, as libpq does when the server has no TLS.
                config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                self.open(&config, NoTls).await?
            }
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
                code: origin_state(db),
                message: db.message().to_string(),
            },
            None => self.unreachable(&e),
        }
    }

    fn query_error(&self, e: tokio_postgres::Error) -> ConnectorError {
        match e.as_db_error() {
            Some(db) => ConnectorError::Origin {
                origin: self.origin.clone(),
                code: origin_state(db),
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
        self.schema_of(&statement)
    }

    fn schema_of(&self, statement: &tokio_postgres::Statement) -> Result<SchemaRef> {
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

    /// Runs statements without results (setting up publications).
    pub(crate) async fn execute(self: &Arc<Self>, sql: &str) -> Result<()> {
        let conn = self.checkout().await?;
        let client = conn.client.as_ref().expect("checked-out connection");
        client
            .batch_execute(sql)
            .await
            .map_err(|e| self.query_error(e))
    }

    /// Streams the rows of `sql` as of the exported snapshot `snapshot` (a
    /// replication slot's), on a connection of its own that keeps the snapshot's
    /// transaction open until the rows are read.
    pub(crate) async fn snapshot_query(
        self: &Arc<Self>,
        snapshot: &str,
        sql: &str,
    ) -> Result<(SchemaRef, SendableRecordBatchStream)> {
        let client = self.connect().await?;
        client
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
                snapshot.replace('\'', "''")
            ))
            .await
            .map_err(|e| self.query_error(e))?;
        let statement = client.prepare(sql).await.map_err(|e| self.query_error(e))?;
        let schema = self.schema_of(&statement)?;
        let rows = client
            .query_raw(&statement, std::iter::empty::<&(dyn ToSql + Sync)>())
            .await
            .map_err(|e| self.query_error(e))?;
        let pool = Arc::clone(self);
        // `done`: the rows ended (a row stream must not be polled past its end).
        let state = (client, Box::pin(rows), Arc::clone(&schema), pool, false);
        let stream = futures::stream::try_unfold(
            state,
            |(client, mut rows, schema, pool, done)| async move {
                if done {
                    return Ok(None);
                }
                let (chunk, ended) = next_chunk(&mut rows)
                    .await
                    .map_err(|e| DataFusionError::from(pool.query_error(e)))?;
                if chunk.is_empty() {
                    return Ok(None);
                }
                let batch = to_batch(&chunk, &schema)?;
                Ok(Some((batch, (client, rows, schema, pool, ended))))
            },
        );
        Ok((
            Arc::clone(&schema),
            Box::pin(RecordBatchStreamAdapter::new(schema, stream)),
        ))
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
            // In flight from the moment it is sent: the origin may answer nothing
            // (not even BindComplete, which waits in its output buffer) until the
            // statement is done, and a statement dropped meanwhile must be cancelled.
            conn.busy = true;
            let client = conn.client.as_ref().expect("checked-out connection");
            let rows = match client
                .query_raw(sql.as_str(), std::iter::empty::<&(dyn ToSql + Sync)>())
                .await
            {
                Ok(rows) => rows,
                Err(e) => {
                    // The origin answered (an error): the connection is idle again.
                    conn.busy = false;
                    return Err(DataFusionError::from(pool.query_error(e)));
                }
            };
            let state = (conn, Box::pin(rows), schema, false);
            Ok::<_, DataFusionError>(futures::stream::try_unfold(
                state,
                |(mut conn, mut rows, schema, done)| async move {
                    if done {
                        return Ok(None);
                    }
                    let (chunk, finished) = match next_chunk(&mut rows).await {
                        Ok(c) => c,
                        Err(e) => {
                            conn.busy = false;
                            conn.client.take();
                            return Err(DataFusionError::from(conn.pool.query_error(e)));
                        }
                    };
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

/// Up to [`BATCH_ROWS`] rows of `rows`, and whether the rows ended (a row stream
/// must not be polled past its end).
async fn next_chunk(
    rows: &mut std::pin::Pin<Box<tokio_postgres::RowStream>>,
) -> std::result::Result<(Vec<Row>, bool), tokio_postgres::Error> {
    let mut chunk = Vec::with_capacity(BATCH_ROWS);
    while chunk.len() < BATCH_ROWS {
        match rows.next().await {
            Some(row) => chunk.push(row?),
            None => return Ok((chunk, true)),
        }
    }
    Ok((chunk, false))
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
            let array = super::rows::column(rows, i, column.type_(), field.data_type())?;
            crate::columns::as_planned(array, field.data_type())
        })
        .collect::<DfResult<Vec<_>>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// The SQLSTATE an origin sent (PostgreSQL's are always five characters).
fn origin_state(db: &tokio_postgres::error::DbError) -> SqlState {
    SqlState::parse(db.code().code()).unwrap_or(SqlState::INTERNAL_ERROR)
}
