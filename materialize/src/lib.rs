//! Materialized datasets (`mode: materialize`): each is copied from its origin
//! into the local store and read from the copy, also while the origin is down.
//!
//! One [`worker`] per dataset keeps its copy: it takes a snapshot at start, again
//! every `refresh:` interval and on request (`REFRESH MATERIALIZED VIEW`), and
//! retries with backoff when the origin is down, serving the last copy meanwhile.
//! A live dataset's worker ([`live`]) follows the origin's change feed instead,
//! applying each origin transaction with its position in one local transaction.
//! Its [`state`] is what `switchyard.datasets` ([`status_table`]) shows. A
//! [`snapshot`] streams the origin's rows into a new copy with bounded memory.

pub mod crash;
mod error;
mod live;
pub mod snapshot;
pub mod state;
pub mod status_table;
mod sync;
mod worker;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use switchyard_config::{Config, Dataset, Mode};
use switchyard_connectors::changes::SharedFeed;
use switchyard_connectors::local::{CopyInfo, LocalStore};
use switchyard_connectors::{CopyNotes, Origin, Origins};
use tokio::sync::{mpsc, oneshot};

pub use error::{MaterializeError, Result};
pub use state::{DatasetStatus, State};
pub use status_table::{StatusSchema, STATUS_SCHEMA};

/// A request to a dataset's worker: copy now, and say how it went.
type Refresh = oneshot::Sender<Result<CopyInfo>>;

/// One materialized dataset and its worker's mailbox.
struct Kept {
    dataset: Dataset,
    origin: Arc<dyn Origin>,
    /// Live datasets: `Some` (the origin's change feed, if it has one).
    live: Option<Option<SharedFeed>>,
    status: Arc<Mutex<DatasetStatus>>,
    progress: Arc<AtomicU64>,
    requests: mpsc::Sender<Refresh>,
    /// Taken when the worker starts.
    mailbox: Mutex<Option<mpsc::Receiver<Refresh>>>,
}

/// Keeps the copies of every materialized dataset of a config.
pub struct Materializer {
    store: Arc<LocalStore>,
    notes: Arc<CopyNotes>,
    kept: BTreeMap<String, Kept>,
    /// One replayer per origin with sync datasets.
    replayers: BTreeMap<String, Arc<sync::Replayer>>,
    started: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Materializer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Materializer")
            .field("datasets", &self.kept.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Materializer {
    /// The materialized datasets of `config`, over the origins and local store
    /// [`switchyard_connectors::install`] set up. Copies of datasets that left the
    /// config (or whose source changed) and copies cut short by a crash are dropped.
    pub fn new(config: &Config, origins: &Origins) -> Result<Arc<Self>> {
        let store = Arc::clone(origins.store().ok_or(MaterializeError::NoStore)?);
        let mut kept = BTreeMap::new();
        for dataset in &config.datasets {
            let Mode::Materialize { refresh, live, .. } = &dataset.mode else {
                continue;
            };
            let refresh = *refresh;
            let origin = Arc::clone(
                origins
                    .get(&dataset.origin)
                    .ok_or_else(|| MaterializeError::UnknownDataset(dataset.origin.clone()))?,
            );
            let name = dataset.qualified_name();
            let (requests, mailbox) = mpsc::channel(16);
            let live = live.as_ref().map(|_| origin.changes());
            let is_live = live.is_some();
            kept.insert(
                name.clone(),
                Kept {
                    dataset: dataset.clone(),
                    live,
                    origin,
                    status: Arc::new(Mutex::new(DatasetStatus {
                        sync: dataset.mode.sync().is_some(),
                        ..DatasetStatus::new(&name, refresh, is_live)
                    })),
                    progress: Arc::new(AtomicU64::new(0)),
                    requests,
                    mailbox: Mutex::new(Some(mailbox)),
                },
            );
        }
        let mut replayers = BTreeMap::new();
        for dataset in config.datasets.iter().filter(|d| d.mode.sync().is_some()) {
            if replayers.contains_key(&dataset.origin) {
                continue;
            }
            let writes = origins
                .get(&dataset.origin)
                .and_then(|o| o.writes())
                .ok_or_else(|| MaterializeError::Copy {
                    code: switchyard_sqlstate::SqlState::FEATURE_NOT_SUPPORTED,
                    message: format!(
                        "origin {} takes no writes, so {} cannot be mode: sync",
                        dataset.origin,
                        dataset.qualified_name()
                    ),
                    origin_down: false,
                })?;
            replayers.insert(
                dataset.origin.clone(),
                Arc::new(sync::Replayer {
                    origin: dataset.origin.clone(),
                    store: Arc::clone(&store),
                    writes,
                    datasets: sync::of_origin(config.datasets.iter(), &dataset.origin),
                    status: Arc::default(),
                    keys: Default::default(),
                }),
            );
        }
        let this = Materializer {
            store,
            notes: Arc::clone(origins.copy_notes()),
            kept,
            replayers,
            started: Default::default(),
        };
        this.tidy()?;
        Ok(Arc::new(this))
    }

    /// Drops what no dataset reads any more, and reads what the store still holds.
    fn tidy(&self) -> Result<()> {
        let orphans = self.store.drop_orphans()?;
        if orphans > 0 {
            tracing::info!(tables = orphans, "dropped unfinished copies");
        }
        for copy in self.store.copies()? {
            let current = self
                .kept
                .get(&copy.dataset)
                .filter(|k| copy.source == switchyard_connectors::local::source_key(&k.dataset));
            match current {
                Some(k) => k.status_mut().copied(&copy),
                None => {
                    tracing::info!(dataset = %copy.dataset, "dropping a copy the config no longer reads");
                    if copy.position.is_some() {
                        tracing::warn!(
                            dataset = %copy.dataset,
                            source = %copy.source,
                            "the dropped copy was live: its origin may keep a replication slot (and WAL) for it; drop it there if nothing else uses it"
                        );
                    }
                    self.store.drop_copy(&copy.dataset)?;
                }
            }
        }
        for (name, k) in &self.kept {
            self.notes.set(name, k.status_mut().why_no_copy());
        }
        Ok(())
    }

    /// Starts every dataset's worker, and the sync replayers, on the current
    /// runtime (once).
    pub fn start(self: &Arc<Self>) {
        if !self.started.swap(true, std::sync::atomic::Ordering::SeqCst) {
            for replayer in self.replayers.values() {
                tokio::spawn(sync::run(Arc::clone(&self.store), Arc::clone(replayer)));
            }
        }
        for name in self.kept.keys() {
            let mailbox = self.kept[name]
                .mailbox
                .lock()
                .ok()
                .and_then(|mut m| m.take());
            if let Some(mailbox) = mailbox {
                if self.kept[name].live.is_some() {
                    tokio::spawn(live::run(Arc::clone(self), name.clone(), mailbox));
                } else {
                    tokio::spawn(worker::run(Arc::clone(self), name.clone(), mailbox));
                }
            }
        }
    }

    /// Names of the materialized datasets.
    pub fn datasets(&self) -> impl Iterator<Item = &str> {
        self.kept.keys().map(String::as_str)
    }

    /// Whether `dataset` (`schema.name`) is materialized here.
    pub fn keeps(&self, dataset: &str) -> bool {
        self.kept.contains_key(dataset)
    }

    /// Copies `dataset` again now (`REFRESH MATERIALIZED VIEW`), waiting for the
    /// copy; reads go on from the previous copy meanwhile.
    pub async fn refresh(&self, dataset: &str) -> Result<CopyInfo> {
        let kept = self
            .kept
            .get(dataset)
            .ok_or_else(|| MaterializeError::NotMaterialized(dataset.to_string()))?;
        let (tx, rx) = oneshot::channel();
        kept.requests
            .send(tx)
            .await
            .map_err(|_| MaterializeError::Stopped(dataset.to_string()))?;
        rx.await
            .map_err(|_| MaterializeError::Stopped(dataset.to_string()))?
    }

    /// Copies `dataset` here and now, without a worker (`switchyard materialize`);
    /// `progress` counts the rows copied.
    pub async fn copy_now(&self, dataset: &str, progress: Arc<AtomicU64>) -> Result<CopyInfo> {
        let kept = self
            .kept
            .get(dataset)
            .ok_or_else(|| MaterializeError::NotMaterialized(dataset.to_string()))?;
        match &kept.live {
            Some(Some(feed)) => {
                // The stream is dropped: `serve` resumes it from the copy's position.
                let (info, _stream) =
                    snapshot::take_live(feed, &self.store, &kept.dataset, progress).await?;
                Ok(info)
            }
            Some(None) => Err(live::no_feed(&kept.dataset)),
            None => snapshot::take(&kept.origin, &self.store, &kept.dataset, progress).await,
        }
    }

    /// Every sync dataset's queue, by name.
    pub fn sync_queues(&self) -> Result<Vec<SyncQueue>> {
        let queues: BTreeMap<String, switchyard_connectors::local::outbox::QueueStatus> = self
            .store
            .outbox()?
            .queues()?
            .into_iter()
            .map(|q| (q.dataset.clone(), q))
            .collect();
        let mut out = Vec::new();
        for r in self.replayers.values() {
            let status = r.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
            for (name, dataset) in &r.datasets {
                let q = queues.get(name).cloned().unwrap_or_default();
                let sync = dataset.mode.sync();
                out.push(SyncQueue {
                    dataset: name.clone(),
                    origin: r.origin.clone(),
                    conflict: sync.map(|s| s.conflict.as_str()).unwrap_or_default(),
                    pending: q.pending,
                    oldest_pending: q.oldest_pending,
                    set_aside: q.set_aside,
                    last_error: q.last_error.or_else(|| status.last_error.clone()),
                    last_applied: status.last_applied.clone(),
                });
            }
        }
        Ok(out)
    }

    /// Every recorded sync conflict, oldest first.
    pub fn conflicts(&self) -> Result<Vec<switchyard_connectors::local::outbox::ConflictRecord>> {
        Ok(self.store.outbox()?.conflicts()?)
    }

    /// Every materialized dataset's status, by name.
    pub fn status(&self) -> Vec<DatasetStatus> {
        self.kept
            .values()
            .map(|k| {
                let mut s = k.status_mut().clone();
                if s.state.is_copying() {
                    s.snapshot_rows = Some(k.progress.load(std::sync::atomic::Ordering::Relaxed));
                }
                s
            })
            .collect()
    }
}

/// One sync dataset's queue, as `switchyard.sync_queue` shows it.
#[derive(Debug, Clone)]
pub struct SyncQueue {
    /// `schema.name`.
    pub dataset: String,
    /// Its origin.
    pub origin: String,
    /// Its conflict policy.
    pub conflict: &'static str,
    /// Entries waiting for the origin.
    pub pending: u64,
    /// When the oldest waiting entry committed locally (RFC 3339).
    pub oldest_pending: Option<String>,
    /// Entries set aside (rejected, or refused by the origin).
    pub set_aside: u64,
    /// Why the replay last failed, while it waits.
    pub last_error: Option<String>,
    /// When the origin last took an entry (RFC 3339).
    pub last_applied: Option<String>,
}

impl Kept {
    fn status_mut(&self) -> std::sync::MutexGuard<'_, DatasetStatus> {
        // A worker that panicked mid-update leaves a readable status.
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }
}
