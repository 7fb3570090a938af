//! The one trait every origin kind implements: what Switchyard can do with an origin.
//!
//! Reading is what every origin offers: a table per dataset (federated, with
//! pushdown) and, where the origin declares them, catalog facts. Origins with a
//! change feed (PostgreSQL logical replication, MongoDB change streams) offer it
//! for live materialization; origins that take writes offer a [`Writes`]
//! (transactions at the origin). A caller asks the origin, not a `match` on its kind.
//!
//! [`Writes`]: crate::write::Writes

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use switchyard_config::{Dataset, OriginKind};

use crate::facts::{Resolve, TableFacts};
use crate::files::FilesConnector;
use crate::mongo::MongoConnector;
use crate::postgres::PostgresConnector;
use crate::sqlite::SqliteConnector;
use crate::Result;

/// One origin of the config (or the local store).
#[async_trait]
pub trait Origin: std::fmt::Debug + Send + Sync {
    /// The origin's name in the config.
    fn name(&self) -> &str;

    /// The table that serves `dataset`, resolved at the origin (its columns are
    /// read there; nothing of the rows yet).
    async fn table(&self, dataset: &Dataset) -> Result<Arc<dyn TableProvider>>;

    /// What the origin declares about `dataset` when it is a whole origin table
    /// (keys, indexes, NOT NULL, defaults); `None` where the origin declares nothing.
    /// `resolve` names the dataset exposing another origin table (foreign keys).
    async fn facts(&self, dataset: &Dataset, resolve: Resolve<'_>) -> Result<Option<TableFacts>> {
        let _ = (dataset, resolve);
        Ok(None)
    }

    /// The origin's change feed, where it has one (`live: true` datasets).
    fn changes(&self) -> Option<crate::changes::SharedFeed> {
        None
    }

    /// Writes at the origin, where it takes them.
    fn writes(&self) -> Option<crate::write::SharedWrites> {
        None
    }

    /// Native queries in the origin's own language, where it takes them (MongoDB
    /// pipelines for step graphs' MQL steps).
    fn native(&self) -> Option<crate::native::SharedNative> {
        None
    }
}

/// The origin for one `origins:` entry of the config; nothing is connected yet.
pub fn open(origin: &switchyard_config::Origin) -> Result<Arc<dyn Origin>> {
    Ok(match &origin.kind {
        OriginKind::Postgres(pg) => Arc::new(PostgresConnector::new(&origin.name, pg.clone())?),
        OriginKind::Sqlite { path } => Arc::new(SqliteConnector::new(&origin.name, path)),
        OriginKind::Mongodb(m) => Arc::new(MongoConnector::new(&origin.name, m.clone())),
        OriginKind::Files { path } => Arc::new(FilesConnector::new(&origin.name, path)),
    })
}
