//! Writes to a SQLite file (a `kind: sqlite` origin or the local store): a
//! transaction is one read-write connection that began `IMMEDIATE` (it holds the
//! file's write lock, so it cannot fail half-way for a lock), its statements
//! ([`crate::sql::write_sql`]) run on a blocking thread. Savepoints are SQLite's own.
//! Reads inside a block read the last commit (their own connections), not the
//! block's writes.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use switchyard_config::Dataset;

use super::sqlite_error;
use crate::sql::quote_ident;
use crate::sql::write_sql::{render, statements, target, Flavor, CHECK_COLUMN};
use crate::write::{Savepoint, WriteRequest, WriteTransaction, Writes, Written};
use crate::{ConnectorError, Result};

/// Writes to one SQLite file.
#[derive(Debug)]
pub struct SqliteWrites {
    origin: String,
    path: PathBuf,
}

impl SqliteWrites {
    /// Writes to the file at `path`.
    pub fn new(origin: &str, path: PathBuf) -> Self {
        SqliteWrites {
            origin: origin.to_string(),
            path,
        }
    }
}

/// Runs `f` on the connection on a blocking thread.
pub(crate) async fn blocking<T: Send + 'static>(
    conn: &Arc<Mutex<Option<rusqlite::Connection>>>,
    f: impl FnOnce(&rusqlite::Connection) -> Result<T> + Send + 'static,
) -> Result<T> {
    let conn = Arc::clone(conn);
    tokio::task::spawn_blocking(move || {
        let guard = conn.lock().unwrap_or_else(|p| p.into_inner());
        let c = guard
            .as_ref()
            .expect("an open transaction has its connection");
        f(c)
    })
    .await
    .map_err(|e| {
        ConnectorError::DataFusion(datafusion::error::DataFusionError::External(Box::new(e)))
    })?
}

#[async_trait]
impl Writes for SqliteWrites {
    async fn begin(&self) -> Result<Box<dyn WriteTransaction>> {
        let origin = self.origin.clone();
        let path = self.path.clone();
        let conn = tokio::task::spawn_blocking(move || {
            let conn = rusqlite::Connection::open(&path).map_err(|e| sqlite_error(&origin, e))?;
            conn.busy_timeout(std::time::Duration::from_secs(5))
                .map_err(|e| sqlite_error(&origin, e))?;
            super::as_postgresql(&conn).map_err(|e| sqlite_error(&origin, e))?;
            conn.execute_batch("BEGIN IMMEDIATE")
                .map_err(|e| sqlite_error(&origin, e))?;
            Ok::<_, ConnectorError>(conn)
        })
        .await
        .map_err(|e| {
            ConnectorError::DataFusion(datafusion::error::DataFusionError::External(Box::new(e)))
        })??;
        Ok(Box::new(SqliteTransaction {
            origin: self.origin.clone(),
            conn: Arc::new(Mutex::new(Some(conn))),
        }))
    }
}

/// A transaction on its own connection; dropped while open, the connection closes
/// and SQLite rolls it back.
struct SqliteTransaction {
    origin: String,
    conn: Arc<Mutex<Option<rusqlite::Connection>>>,
}

impl SqliteTransaction {
    async fn batch(&self, sql: String) -> Result<()> {
        let origin = self.origin.clone();
        blocking(&self.conn, move |c| {
            c.execute_batch(&sql).map_err(|e| sqlite_error(&origin, e))
        })
        .await
    }
}

#[async_trait]
impl WriteTransaction for SqliteTransaction {
    fn origin(&self) -> &str {
        &self.origin
    }

    async fn write(&mut self, request: WriteRequest<'_>) -> Result<Written> {
        let flavor = Flavor::Sqlite;
        let table = target(&self.origin, request.dataset)?;
        let mut returned = Vec::new();
        let mut returning = Vec::new();
        if let Some(check) = request.check {
            returning.push(format!(
                "(({}) IS TRUE) AS {CHECK_COLUMN}",
                render(flavor, check)?
            ));
            returned.push(Field::new(CHECK_COLUMN, DataType::Boolean, false));
        }
        if request.returning {
            for field in request.schema.fields() {
                returning.push(quote_ident(field.name()));
                returned.push(field.as_ref().clone());
            }
        }
        let returning_sql = if returning.is_empty() {
            String::new()
        } else {
            format!(" RETURNING {}", returning.join(", "))
        };
        let sqls = statements(flavor, &table, request.write, &returning_sql)?;
        let schema = Arc::new(Schema::new(returned));
        let origin = self.origin.clone();
        let checked = request.check.is_some();
        let wants_rows = request.returning;
        blocking(&self.conn, move |c| {
            let mut written = Written::default();
            for sql in sqls {
                tracing::debug!(origin = %origin, %sql, "origin write");
                if schema.fields().is_empty() {
                    written.rows +=
                        c.execute(&sql, []).map_err(|e| sqlite_error(&origin, e))? as u64;
                    continue;
                }
                let mut batch = super::exec::query_batch(&origin, c, &sql, &schema)?;
                written.rows += batch.num_rows() as u64;
                if checked {
                    let passed = batch.column(0).as_boolean();
                    written.violations += (passed.len() - passed.true_count()) as u64;
                    batch = batch
                        .project(&(1..batch.num_columns()).collect::<Vec<_>>())
                        .map_err(|e| ConnectorError::DataFusion(e.into()))?;
                }
                if wants_rows {
                    written.returned.push(batch);
                }
            }
            Ok(written)
        })
        .await
    }

    async fn savepoint(&mut self, op: Savepoint, name: &str) -> Result<()> {
        let name = quote_ident(name);
        self.batch(match op {
            Savepoint::Set => format!("SAVEPOINT {name}"),
            Savepoint::Release => format!("RELEASE SAVEPOINT {name}"),
            Savepoint::RollbackTo => format!("ROLLBACK TO SAVEPOINT {name}"),
        })
        .await
    }

    fn table(
        &self,
        _dataset: &Dataset,
        _schema: datafusion::arrow::datatypes::SchemaRef,
    ) -> Result<Option<Arc<dyn datafusion::catalog::TableProvider>>> {
        Ok(None)
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.batch("COMMIT".into()).await
    }

    async fn rollback(self: Box<Self>) -> Result<()> {
        self.batch("ROLLBACK".into()).await
    }
}
