//! The local store: Switchyard's own embedded SQLite file under the data dir.
//!
//! Materialized and synced datasets will live here; today its tables are served
//! read-only under the `local` schema, and Switchyard (or the demo) writes them.

use std::path::{Path, PathBuf};

use switchyard_sqlstate::SqlState;

use crate::sqlite::SqliteConnector;
use crate::{ConnectorError, Result};

/// Schema the local store's tables appear under.
pub const LOCAL_SCHEMA: &str = "local";

/// The embedded local store.
#[derive(Debug)]
pub struct LocalStore {
    path: PathBuf,
}

impl LocalStore {
    /// Opens the store, creating the file and its folder on first use.
    pub fn open(path: &Path) -> Result<Self> {
        let fail = |message: String| ConnectorError::Unreachable {
            origin: LOCAL_SCHEMA.into(),
            message,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
        }
        let conn = rusqlite::Connection::open(path)
            .map_err(|e| fail(format!("{}: {e}", path.display())))?;
        // WAL lets readers (queries) and the writer (materialize/sync) run together.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| fail(e.to_string()))?;
        Ok(LocalStore {
            path: path.to_path_buf(),
        })
    }

    /// Runs statements against the store (setup, loading).
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        let conn =
            rusqlite::Connection::open(&self.path).map_err(|e| ConnectorError::Unreachable {
                origin: LOCAL_SCHEMA.into(),
                message: e.to_string(),
            })?;
        conn.execute_batch(sql).map_err(|e| ConnectorError::Origin {
            origin: LOCAL_SCHEMA.into(),
            code: SqlState::SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION,
            message: e.to_string(),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A connector serving the store's tables.
    pub fn connector(&self) -> SqliteConnector {
        SqliteConnector::new(LOCAL_SCHEMA, &self.path)
    }
}
