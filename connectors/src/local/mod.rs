//! The local store: Switchyard's own embedded SQLite file under the data dir.
//!
//! Its own tables are served read-only under the `local` schema (Switchyard or the
//! demo writes them). Materialized datasets keep their copies here ([`copies`]:
//! written whole in one transaction; [`apply`]: a live copy follows its origin's
//! transactions; [`scan`]: read with exact filter pushdown; [`codec`]: how each
//! Arrow type is stored so it reads back equal).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::catalog::TableProvider;
use switchyard_config::Dataset;

use switchyard_sqlstate::SqlState;

use crate::sqlite::SqliteConnector;
use crate::{ConnectorError, Result};

pub mod apply;
pub mod codec;
pub mod copies;
pub mod outbox;
pub mod scan;
pub mod sync_write;

pub use apply::Applier;
pub use copies::{CopyInfo, CopyWriter, RESERVED_PREFIX};

/// Schema the local store's tables appear under.
pub const LOCAL_SCHEMA: &str = "local";

/// The embedded local store.
#[derive(Debug, Clone)]
pub struct LocalStore {
    path: PathBuf,
    max_size: Option<u64>,
    /// Counts commits that queued sync entries: replayers wait on it.
    queued: Arc<tokio::sync::watch::Sender<u64>>,
    /// Origin transactions of replayed sync entries, between their claim and the
    /// entry's local finish: the change feed recognises them without a local
    /// write per entry (after a restart, the outbox's record does).
    replaying: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl LocalStore {
    /// Opens the store from its config, creating the file and its folder on first use.
    pub fn from_config(config: &switchyard_config::LocalStore) -> Result<Self> {
        let mut store = Self::open(&config.path)?;
        store.max_size = config.max_size;
        Ok(store)
    }

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
            max_size: None,
            queued: Arc::new(tokio::sync::watch::channel(0).0),
            replaying: Arc::default(),
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

    /// Changes each time a transaction queues sync entries.
    pub fn queued(&self) -> tokio::sync::watch::Receiver<u64> {
        self.queued.subscribe()
    }

    /// Notes that the origin transaction `transaction` replays a sync entry (before
    /// it commits), or with `done`, that the entry's finish recorded it.
    pub fn replaying(&self, transaction: &str, done: bool) {
        let mut set = self.replaying.lock().unwrap_or_else(|p| p.into_inner());
        if done {
            set.remove(transaction);
        } else {
            set.insert(transaction.to_string());
        }
    }

    /// Whether `transaction` is a replay noted by [`Self::replaying`].
    pub(crate) fn is_replaying(&self, transaction: &str) -> bool {
        self.replaying
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(transaction)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A connector serving the store's tables.
    pub fn connector(&self) -> SqliteConnector {
        SqliteConnector::new(LOCAL_SCHEMA, &self.path)
    }

    /// The table a materialized dataset is read from: its current copy, or
    /// [`ConnectorError::NotMaterialized`] while there is none.
    pub fn copy_table(&self, dataset: &Dataset, why_none: &str) -> Result<Arc<dyn TableProvider>> {
        let name = dataset.qualified_name();
        match self.copy_info(&name)? {
            Some(info) if info.source == source_key(dataset) => Ok(Arc::new(scan::CopyTable::new(
                &name,
                self.path.clone(),
                info.schema,
            ))),
            _ => Err(ConnectorError::NotMaterialized {
                dataset: name,
                why: why_none.to_string(),
            }),
        }
    }
}

/// What a copy of `dataset` was read from: a copy of another origin or source
/// (the config changed) is not served, and is taken again.
pub fn source_key(dataset: &Dataset) -> String {
    format!("{}:{:?}", dataset.origin, dataset.source)
}

/// A read-only connection to the store's file.
pub(crate) fn open_readonly_store(path: &Path) -> Result<rusqlite::Connection> {
    crate::sqlite::open_readonly(LOCAL_SCHEMA, path)
}
