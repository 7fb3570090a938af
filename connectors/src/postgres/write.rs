//! Writes to a PostgreSQL origin: each write's statements ([`crate::sql::write_sql`])
//! run on a connection the transaction keeps from `BEGIN` to its end, which its
//! reads use too (they see its writes). The row filter's check rides along as a
//! RETURNING column.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::Expr;
use datafusion_federation::sql::SQLFederationProvider;
use switchyard_config::Dataset;

use super::pool::{Dedicated, PgPool};
use super::PgExecutor;
use crate::sql::quote_ident;
use crate::sql::write_sql::{render, statements, target, Flavor, CHECK_COLUMN};
use crate::write::{Claim, Savepoint, WriteRequest, WriteTransaction, Writes, Written};
use crate::Result;

/// The origin-side record of replayed sync entries: one row per entry, written
/// in the entry's own transaction (so it commits exactly when the entry does),
/// with that transaction's xid as the change feed names it.
pub const APPLIED: &str = "switchyard_sync.applied";

const APPLIED_DDL: &str = "CREATE SCHEMA IF NOT EXISTS switchyard_sync;
CREATE TABLE IF NOT EXISTS switchyard_sync.applied (
    entry text PRIMARY KEY,
    xid text NOT NULL DEFAULT (pg_current_xact_id()::xid)::text,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

fn applied_table_error(origin: &str, e: crate::ConnectorError) -> crate::ConnectorError {
    match e {
        crate::ConnectorError::Origin { code, message, .. } => crate::ConnectorError::Origin {
            origin: origin.to_string(),
            code,
            message: format!(
                "sync replay needs the table {APPLIED} at the origin and could not create it ({message}); \
                 create it as a superuser: {APPLIED_DDL}, and grant its user INSERT, SELECT on it"
            ),
        },
        other => other,
    }
}

/// Writes to one PostgreSQL origin.
#[derive(Debug)]
pub struct PgWrites {
    pool: Arc<PgPool>,
    /// [`APPLIED`] exists (checked once per process).
    applied_ready: Arc<AtomicBool>,
}

impl PgWrites {
    /// Writes over `pool`.
    pub fn new(pool: Arc<PgPool>) -> Self {
        PgWrites {
            pool,
            applied_ready: Arc::default(),
        }
    }
}

impl PgWrites {
    fn transaction(&self, conn: Dedicated) -> Box<PgTransaction> {
        PgTransaction::on(conn, Arc::clone(&self.applied_ready))
    }
}

/// Creates [`APPLIED`] once per process (`ready`), outside any replay's
/// transaction (which may roll back).
async fn applied_table(pool: &Arc<PgPool>, ready: &AtomicBool) -> Result<()> {
    if ready.load(Ordering::Acquire) {
        return Ok(());
    }
    let setup = pool.dedicated().await?;
    match setup.batch_execute(APPLIED_DDL).await {
        Ok(()) => setup.release(),
        Err(e) => {
            setup.discard();
            return Err(applied_table_error(pool.origin(), e));
        }
    }
    ready.store(true, Ordering::Release);
    Ok(())
}

fn claim_sql(entry: &str) -> String {
    format!(
        "INSERT INTO {APPLIED} (entry) VALUES ('{}') ON CONFLICT (entry) DO NOTHING RETURNING xid",
        entry.replace('\'', "''")
    )
}

fn done_sql(entry: &str) -> String {
    format!(
        "SELECT xid FROM {APPLIED} WHERE entry = '{}'",
        entry.replace('\'', "''")
    )
}

#[async_trait]
impl Writes for PgWrites {
    async fn begin(&self) -> Result<Box<dyn WriteTransaction>> {
        let conn = self.pool.dedicated().await?;
        conn.batch_execute("BEGIN").await?;
        Ok(self.transaction(conn))
    }

    async fn begin_claimed(&self, entry: &str) -> Result<(Box<dyn WriteTransaction>, Claim)> {
        applied_table(&self.pool, &self.applied_ready).await?;
        let conn = self.pool.dedicated().await?;
        // BEGIN and the claim in one simple query: one round trip.
        let claim = begin_claim(&conn, "BEGIN", entry).await?;
        let t: Box<dyn WriteTransaction> = self.transaction(conn);
        Ok((t, claim))
    }
}

/// Runs `before` (which ends with `BEGIN`) and the claim of `entry` as one simple
/// query. A simple query stops at its first failing statement, so the claim never
/// runs outside the transaction.
async fn begin_claim(conn: &Dedicated, before: &str, entry: &str) -> Result<Claim> {
    let fresh = conn
        .simple_rows(&format!("{before}; {}", claim_sql(entry)))
        .await?;
    Ok(match fresh.into_iter().next().flatten() {
        Some(transaction) => Claim::Fresh {
            transaction: Some(transaction),
        },
        None => Claim::Done {
            transaction: conn
                .simple_rows(&done_sql(entry))
                .await?
                .into_iter()
                .next()
                .flatten(),
        },
    })
}

/// A transaction on a connection of its own. Dropped while open, the connection is
/// closed instead of pooled, which rolls the transaction back at the origin.
struct PgTransaction {
    conn: Option<Arc<Dedicated>>,
    origin: String,
    /// Federation over the transaction's connection, for its reads.
    provider: Arc<SQLFederationProvider>,
    applied_ready: Arc<AtomicBool>,
}

impl PgTransaction {
    fn on(conn: Dedicated, applied_ready: Arc<AtomicBool>) -> Box<PgTransaction> {
        let conn = Arc::new(conn);
        let provider = Arc::new(SQLFederationProvider::new(Arc::new(
            PgExecutor::in_transaction(conn.pool(), Arc::clone(&conn)),
        )));
        Box::new(PgTransaction {
            origin: conn.pool().origin().to_string(),
            conn: Some(conn),
            provider,
            applied_ready,
        })
    }

    fn conn(&self) -> &Dedicated {
        self.conn
            .as_ref()
            .expect("an open transaction has its connection")
    }

    /// The connection, taken from the transaction and from its readers' executor
    /// (so that it returns to the pool unless a read still holds it).
    fn take_conn(&mut self) -> Arc<Dedicated> {
        let conn = self
            .conn
            .take()
            .expect("an open transaction has its connection");
        self.provider = Arc::new(SQLFederationProvider::new(Arc::new(PgExecutor::new(
            Arc::clone(conn.pool()),
        ))));
        conn
    }

    async fn end(mut self: Box<Self>, sql: &str) -> Result<()> {
        let conn = self.take_conn();
        let ended = conn.batch_execute(sql).await;
        match (ended, Arc::try_unwrap(conn)) {
            (Ok(()), Ok(conn)) => {
                conn.release();
                Ok(())
            }
            // A read still holds it: the connection closes when that read ends.
            (Ok(()), Err(_shared)) => Ok(()),
            (Err(e), Ok(conn)) => {
                conn.discard();
                Err(e)
            }
            (Err(e), Err(_shared)) => Err(e),
        }
    }
}

impl Drop for PgTransaction {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            tracing::debug!(origin = %self.origin, "transaction abandoned: closing its connection");
            if let Ok(conn) = Arc::try_unwrap(conn) {
                conn.discard();
            }
        }
    }
}

#[async_trait]
impl WriteTransaction for PgTransaction {
    fn origin(&self) -> &str {
        &self.origin
    }

    async fn write(&mut self, request: WriteRequest<'_>) -> Result<Written> {
        let flavor = Flavor::Postgres;
        let table = target(&self.origin, request.dataset)?;
        let mut returned_schema: Vec<Field> = Vec::new();
        let mut returning = Vec::new();
        if let Some(check) = request.check {
            returning.push(format!(
                "({}) IS TRUE AS {CHECK_COLUMN}",
                render(flavor, check)?
            ));
            returned_schema.push(Field::new(CHECK_COLUMN, DataType::Boolean, false));
        }
        if request.returning {
            for field in request.schema.fields() {
                returning.push(quote_ident(field.name()));
                returned_schema.push(field.as_ref().clone());
            }
        }
        let returning_sql = if returning.is_empty() {
            String::new()
        } else {
            format!(" RETURNING {}", returning.join(", "))
        };
        let statements = statements(flavor, &table, request.write, &returning_sql)?;
        let returned_schema = Arc::new(Schema::new(returned_schema));
        let mut written = Written::default();
        for sql in statements {
            tracing::debug!(origin = %self.origin, %sql, "origin write");
            if returning.is_empty() {
                written.rows += self.conn().execute(&sql).await?;
                continue;
            }
            let batch = self.conn().query(&sql, &returned_schema).await?;
            written.rows += batch.num_rows() as u64;
            let mut batch = batch;
            if request.check.is_some() {
                let passed = batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::BooleanArray>()
                    .expect("the check column is boolean");
                written.violations += (passed.len() - passed.true_count()) as u64;
                batch = batch
                    .project(&(1..batch.num_columns()).collect::<Vec<_>>())
                    .map_err(DataFusionError::from)?;
            }
            if request.returning {
                written.returned.push(batch);
            }
        }
        Ok(written)
    }

    async fn savepoint(&mut self, op: Savepoint, name: &str) -> Result<()> {
        let name = quote_ident(name);
        let sql = match op {
            Savepoint::Set => format!("SAVEPOINT {name}"),
            Savepoint::Release => format!("RELEASE SAVEPOINT {name}"),
            Savepoint::RollbackTo => format!("ROLLBACK TO SAVEPOINT {name}"),
        };
        self.conn().batch_execute(&sql).await
    }

    fn table(
        &self,
        dataset: &Dataset,
        schema: datafusion::arrow::datatypes::SchemaRef,
    ) -> Result<Option<Arc<dyn datafusion::catalog::TableProvider>>> {
        let local_name = dataset.qualified_name();
        let wanted = crate::sql::DatasetSql::of(&local_name, &dataset.source)?;
        Ok(Some(wanted.into_table(
            &local_name,
            schema,
            &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
            &self.provider,
        )?))
    }

    async fn lock_rows(
        &mut self,
        dataset: &Dataset,
        schema: &SchemaRef,
        filter: &Expr,
    ) -> Result<Vec<RecordBatch>> {
        let table = target(&self.origin, dataset)?;
        let columns = schema
            .fields()
            .iter()
            .map(|f| quote_ident(f.name()))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {columns} FROM {table} WHERE {} FOR UPDATE",
            render(Flavor::Postgres, filter)?
        );
        tracing::debug!(origin = %self.origin, %sql, "origin rows locked");
        Ok(vec![self.conn().query(&sql, schema).await?])
    }

    async fn claim(&mut self, entry: &str) -> Result<Claim> {
        applied_table(self.conn().pool(), &self.applied_ready).await?;
        let xid = Arc::new(Schema::new(vec![Field::new("xid", DataType::Utf8, false)]));
        let id = |b: &RecordBatch| {
            (b.num_rows() > 0).then(|| b.column(0).as_string::<i32>().value(0).to_string())
        };
        let fresh = self.conn().query(&claim_sql(entry), &xid).await?;
        if let Some(transaction) = id(&fresh) {
            return Ok(Claim::Fresh {
                transaction: Some(transaction),
            });
        }
        let done = self.conn().query(&done_sql(entry), &xid).await?;
        Ok(Claim::Done {
            transaction: id(&done),
        })
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.end("COMMIT").await
    }

    async fn commit_then_claim(
        mut self: Box<Self>,
        next: &str,
    ) -> Result<Option<(Box<dyn WriteTransaction>, Claim)>> {
        let conn = match Arc::try_unwrap(self.take_conn()) {
            Ok(conn) => conn,
            Err(shared) => {
                // A read still holds the connection: end here, begin elsewhere.
                self.conn = Some(shared);
                return self.end("COMMIT").await.map(|()| None);
            }
        };
        // COMMIT, BEGIN and the next claim in one round trip.
        match begin_claim(&conn, "COMMIT; BEGIN", next).await {
            Ok(claim) => {
                let t: Box<dyn WriteTransaction> =
                    PgTransaction::on(conn, Arc::clone(&self.applied_ready));
                Ok(Some((t, claim)))
            }
            Err(e) => {
                conn.discard();
                Err(e)
            }
        }
    }

    async fn rollback(self: Box<Self>) -> Result<()> {
        self.end("ROLLBACK").await
    }
}
