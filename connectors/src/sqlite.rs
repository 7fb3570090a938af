//! SQLite origins (and the local store's file): federated through
//! datafusion-table-providers' SQLite executor, with schemas taken from the
//! declared column types rather than guessed from the first row.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::sql::sqlparser::dialect::SQLiteDialect;
use datafusion_federation::sql::{SQLExecutor, SQLFederationProvider, SQLTableSource};
use datafusion_federation::FederatedTableProviderAdaptor;
use datafusion_table_providers::sql::db_connection_pool::sqlitepool::{
    SqliteConnectionPool, SqliteConnectionPoolFactory,
};
use datafusion_table_providers::sql::db_connection_pool::Mode;
use datafusion_table_providers::sqlite::sql_table::SQLiteTable;
use datafusion_table_providers::sqlite::DynSqliteConnectionPool;
use switchyard_config::DatasetSource;
use tokio::sync::OnceCell;

use crate::postgres::{filtered_table_sql, parse_table_name, placeholder, quoted};
use crate::query_table::QueryTable;
use crate::{ConnectorError, Result};

/// One SQLite database file.
pub struct SqliteConnector {
    origin: String,
    path: PathBuf,
    pool: OnceCell<Arc<DynSqliteConnectionPool>>,
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
        SqliteConnector {
            origin: origin.to_string(),
            path: path.to_path_buf(),
            pool: OnceCell::new(),
        }
    }

    async fn pool(&self) -> Result<Arc<DynSqliteConnectionPool>> {
        let pool = self
            .pool
            .get_or_try_init(|| async {
                if !self.path.is_file() {
                    return Err(ConnectorError::Unreachable {
                        origin: self.origin.clone(),
                        message: format!("{} does not exist", self.path.display()),
                    });
                }
                let path = self.path.to_string_lossy();
                let pool: SqliteConnectionPool =
                    SqliteConnectionPoolFactory::new(&path, Mode::File, Duration::from_secs(5))
                        .build()
                        .await
                        .map_err(|e| ConnectorError::Unreachable {
                            origin: self.origin.clone(),
                            message: e.to_string(),
                        })?;
                let pool: Arc<DynSqliteConnectionPool> = Arc::new(pool);
                Ok(pool)
            })
            .await?;
        Ok(Arc::clone(pool))
    }

    /// Names of the tables in the file.
    pub fn table_names(&self) -> Result<Vec<String>> {
        let conn = self.open_readonly()?;
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .map_err(|e| self.error(e))?;
        let names = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.error(e))?;
        names
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.error(e))
    }

    fn open_readonly(&self) -> Result<rusqlite::Connection> {
        rusqlite::Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .map_err(|e| ConnectorError::Unreachable {
            origin: self.origin.clone(),
            message: e.to_string(),
        })
    }

    fn error(&self, e: rusqlite::Error) -> ConnectorError {
        let message = e.to_string();
        if message.contains("no such table") {
            ConnectorError::NotFound {
                origin: self.origin.clone(),
                object: message.trim_start_matches("no such table: ").to_string(),
            }
        } else {
            ConnectorError::Origin {
                origin: self.origin.clone(),
                code: "42000".into(),
                message,
            }
        }
    }

    /// The Arrow schema of the rows `sql` returns, from SQLite's declared column types.
    pub fn describe(&self, sql: &str) -> Result<SchemaRef> {
        let conn = self.open_readonly()?;
        let stmt = conn.prepare(sql).map_err(|e| self.error(e))?;
        let fields: Vec<Field> = stmt
            .columns()
            .iter()
            .map(|c| Field::new(c.name(), affinity_type(c.decl_type()), true))
            .collect();
        Ok(Arc::new(Schema::new(fields)))
    }

    /// A federated table for a dataset; `local_name` is `schema.table` as clients see it.
    pub async fn table(
        &self,
        local_name: &str,
        source: &DatasetSource,
    ) -> Result<Arc<dyn TableProvider>> {
        let pool = self.pool().await?;
        match source {
            DatasetSource::Table { table, filters } if filters.is_empty() => {
                let reference = parse_table_name(table);
                let schema = self.describe(&format!("SELECT * FROM {}", quoted(&reference)))?;
                let table = Arc::new(SQLiteTable::new_with_schema(&pool, schema, reference));
                Ok(Arc::new(table.create_federated_table_provider()?))
            }
            DatasetSource::Table { table, filters } => {
                let sql = filtered_table_sql(&quoted(&parse_table_name(table)), filters);
                self.query_table(pool, local_name, &sql)
            }
            DatasetSource::Query(sql) => self.query_table(pool, local_name, sql),
            DatasetSource::Pipeline { .. } => Err(ConnectorError::DataFusion(
                datafusion::error::DataFusionError::Plan(format!(
                    "dataset {local_name}: pipelines are for mongodb origins"
                )),
            )),
        }
    }

    fn query_table(
        &self,
        pool: Arc<DynSqliteConnectionPool>,
        local_name: &str,
        sql: &str,
    ) -> Result<Arc<dyn TableProvider>> {
        let schema = self.describe(&format!("SELECT * FROM ({sql}) AS q"))?;
        let table = Arc::new(QueryTable::try_new(
            placeholder(local_name),
            sql,
            &SQLiteDialect {},
            schema,
        )?);
        let executor: Arc<dyn SQLExecutor> = Arc::new(SQLiteTable::new_with_schema(
            &pool,
            Arc::new(Schema::empty()),
            parse_table_name(local_name),
        ));
        let provider = Arc::new(SQLFederationProvider::new(executor));
        let source = Arc::new(SQLTableSource::new_with_table(provider, table));
        Ok(Arc::new(FederatedTableProviderAdaptor::new(source)))
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
    use super::affinity_type;
    use datafusion::arrow::datatypes::DataType;

    #[test]
    fn affinity_follows_sqlite_rules() {
        assert_eq!(affinity_type(Some("integer")), DataType::Int64);
        assert_eq!(affinity_type(Some("VARCHAR(20)")), DataType::Utf8);
        assert_eq!(affinity_type(Some("double precision")), DataType::Float64);
        assert_eq!(affinity_type(None), DataType::Utf8);
    }
}
