//! SQLite origins (and the local store's file): federated through our own
//! streaming executor, with schemas taken from the declared column types rather
//! than guessed from the first row.
//!
//! datafusion-table-providers' SQLite reader builds a whole result as one batch and,
//! when that panics (a result over 2 GiB of text), kills its only connection until
//! restart. Here each query opens its own read-only connection on a blocking thread
//! and sends `BATCH_ROWS`-row batches through a bounded channel, so memory stays flat,
//! a dropped stream interrupts SQLite, and a failure ends only its own statement.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::dialect::SQLiteDialect;
use datafusion_federation::sql::SQLFederationProvider;
use switchyard_config::{Dataset, DatasetSource};
use switchyard_sqlstate::SqlState;

use crate::origin::Origin;
use crate::sql::DatasetSql;
use crate::{ConnectorError, Result};
use exec::SqliteExecutor;

pub(crate) mod exec;
pub(crate) mod write;

/// One SQLite database file.
pub struct SqliteConnector {
    origin: String,
    path: PathBuf,
    provider: Arc<SQLFederationProvider>,
}

impl std::fmt::Debug for SqliteConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteConnector")
            .field("origin", &self.origin)
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteConnector {
    /// A connector for the file at `path`; opened on first use.
    pub fn new(origin: &str, path: &Path) -> Self {
        let executor = SqliteExecutor {
            origin: origin.to_string(),
            path: path.to_path_buf(),
            readers: Arc::default(),
        };
        SqliteConnector {
            origin: origin.to_string(),
            path: path.to_path_buf(),
            provider: Arc::new(SQLFederationProvider::new(Arc::new(executor))),
        }
    }

    /// Names of the tables in the file.
    pub fn table_names(&self) -> Result<Vec<String>> {
        table_names(&self.origin, &self.path)
    }

    /// The Arrow schema of the rows `sql` returns, from SQLite's declared column types.
    pub fn describe(&self, sql: &str) -> Result<SchemaRef> {
        describe(&self.origin, &self.path, sql)
    }

    /// A federated table for a dataset; `local_name` is `schema.table` as clients see it.
    fn federated(
        &self,
        local_name: &str,
        source: &DatasetSource,
    ) -> Result<Arc<dyn TableProvider>> {
        if !self.path.is_file() {
            return Err(ConnectorError::Unreachable {
                origin: self.origin.clone(),
                message: format!("{} does not exist", self.path.display()),
            });
        }
        let wanted = DatasetSql::of(local_name, source)?;
        let schema = self.describe(&wanted.describe_sql())?;
        wanted.into_table(local_name, schema, &SQLiteDialect {}, &self.provider)
    }
}

pub(crate) fn open_readonly(origin: &str, path: &Path) -> Result<rusqlite::Connection> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| ConnectorError::Unreachable {
                origin: origin.to_string(),
                message: e.to_string(),
            })?;
    as_postgresql(&conn).map_err(|e| sqlite_error(origin, e))?;
    Ok(conn)
}

/// Settings every origin connection runs with so that the SQL we send means what
/// it means in PostgreSQL: `LIKE` case-sensitive (SQLite's default ignores ASCII case).
pub(crate) fn as_postgresql(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "case_sensitive_like", true)
}

/// A `LIKE` as PostgreSQL reads it: backslash is its escape unless another is named,
/// while SQLite has none by default (`a\_%` would match `a\x`). Applied to every
/// statement sent to a SQLite origin, reads and writes.
pub(crate) fn like_escape(e: &mut datafusion::sql::sqlparser::ast::Expr) {
    use datafusion::sql::sqlparser::ast::{Expr, Value};
    if let Expr::Like {
        escape_char: escape @ None,
        any: false,
        ..
    } = e
    {
        *escape = Some(Value::SingleQuotedString("\\".into()).into());
    }
}

pub(crate) fn sqlite_error(origin: &str, e: rusqlite::Error) -> ConnectorError {
    let message = e.to_string();
    if message.contains("no such table") {
        ConnectorError::NotFound {
            origin: origin.to_string(),
            object: message.trim_start_matches("no such table: ").to_string(),
        }
    } else if message.contains("interrupted") {
        ConnectorError::DataFusion(DataFusionError::Execution(format!(
            "origin {origin}: query interrupted"
        )))
    } else {
        ConnectorError::Origin {
            origin: origin.to_string(),
            code: SqlState::SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION,
            message,
        }
    }
}

pub(crate) fn table_names(origin: &str, path: &Path) -> Result<Vec<String>> {
    let conn = open_readonly(origin, path)?;
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '\\_switchyard%' ESCAPE '\\' ORDER BY name")
        .map_err(|e| sqlite_error(origin, e))?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(|e| sqlite_error(origin, e))?;
    names
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| sqlite_error(origin, e))
}

pub(crate) fn describe(origin: &str, path: &Path, sql: &str) -> Result<SchemaRef> {
    let conn = open_readonly(origin, path)?;
    let stmt = conn.prepare(sql).map_err(|e| sqlite_error(origin, e))?;
    let fields: Vec<Field> = stmt
        .columns()
        .iter()
        .map(|c| Field::new(c.name(), affinity_type(c.decl_type()), true))
        .collect();
    Ok(Arc::new(Schema::new(fields)))
}

#[async_trait]
impl Origin for SqliteConnector {
    fn name(&self) -> &str {
        &self.origin
    }

    async fn table(&self, dataset: &Dataset) -> Result<Arc<dyn TableProvider>> {
        self.federated(&dataset.qualified_name(), &dataset.source)
    }

    fn writes(&self) -> Option<crate::write::SharedWrites> {
        Some(Arc::new(write::SqliteWrites::new(
            &self.origin,
            self.path.clone(),
        )))
    }
}

/// SQLite's type-affinity rules (https://sqlite.org/datatype3.html §3.1) mapped to Arrow.
fn affinity_type(declared: Option<&str>) -> DataType {
    let d = declared.unwrap_or("").to_ascii_uppercase();
    if d.contains("INT") {
        DataType::Int64
    } else if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") {
        DataType::Utf8
    } else if d.contains("BLOB") {
        DataType::Binary
    } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
        DataType::Float64
    } else if d.contains("BOOL") {
        DataType::Boolean
    } else if d.is_empty() {
        // Expressions carry no declared type: text is the lossless choice.
        DataType::Utf8
    } else {
        DataType::Float64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_follows_sqlite_rules() {
        assert_eq!(affinity_type(Some("integer")), DataType::Int64);
        assert_eq!(affinity_type(Some("VARCHAR(20)")), DataType::Utf8);
        assert_eq!(affinity_type(Some("double precision")), DataType::Float64);
        assert_eq!(affinity_type(None), DataType::Utf8);
    }
}
