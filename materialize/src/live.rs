//! A live dataset's worker: snapshot through the change feed (or resume from the
//! position the copy stands at), then apply the origin's transactions as they
//! come, each as one local transaction with its position, and tell the origin
//! only what is durable here.
//!
//! States: `snapshotting` (first copy) or `refreshing` (a new snapshot while the
//! old copy is served) → `streaming`; `origin down` / `error` retry with backoff
//! and serve the last copy. A feed that cannot go on from the stored position
//! (slot dropped or invalidated, a schema change the copy cannot follow) and
//! `REFRESH MATERIALIZED VIEW` lead to a new snapshot.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_config::Dataset;
use switchyard_connectors::changes::{ChangeStream, FeedEvent};
use switchyard_connectors::local::{source_key, Applier, LocalStore};
use switchyard_sqlstate::SqlState;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::{snapshot, MaterializeError, Materializer, Refresh, Result};

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often an idle stream's position is stored (and so acknowledged).
const IDLE_EVERY: Duration = Duration::from_secs(1);

/// The error of a live dataset whose origin has no change feed.
pub(crate) fn no_feed(dataset: &Dataset) -> MaterializeError {
    MaterializeError::Copy {
        code: SqlState::FEATURE_NOT_SUPPORTED,
        message: format!(
            "origin {} offers no change feed, so {} cannot be live",
            dataset.origin,
            dataset.qualified_name()
        ),
        origin_down: false,
    }
}

/// What one applied event left: the position now durable.
struct Applied {
    position: String,
    rows: u64,
    lag_ms: i64,
}

type Work = (FeedEvent, oneshot::Sender<Result<Option<Applied>>>);

pub(crate) async fn run(m: Arc<Materializer>, name: String, mut mailbox: mpsc::Receiver<Refresh>) {
    let span = tracing::info_span!("live", dataset = %name);
    async move {
        let kept = &m.kept[&name];
        let mut backoff = FIRST_BACKOFF;
        let mut waiting: Vec<Refresh> = Vec::new();
        let mut fresh = false;
        loop {
            let was_fresh = fresh;
            let error = match follow(&m, &name, &mut fresh, &mut mailbox, &mut waiting).await {
                Ok(()) => return, // the materializer is gone
                Err(e) => e,
            };
            if let (MaterializeError::Resnapshot(why), false) = (&error, was_fresh) {
                // Once right away; a feed that needs one again at once is an error.
                tracing::warn!(%why, "taking a new snapshot");
                fresh = true;
                continue;
            }
            let retry =
                chrono::Utc::now() + chrono::Duration::from_std(backoff).unwrap_or_default();
            kept.status_mut().failed(&error, retry);
            m.notes.set(&name, kept.status_mut().why_no_copy());
            tracing::warn!(error = %error, retry_in = ?backoff, "live copy stopped; the last copy (if any) is served");
            for w in waiting.drain(..) {
                let _ = w.send(Err(error.clone()));
            }
            let wait = backoff;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            tokio::select! {
                r = mailbox.recv() => match r {
                    None => return,
                    Some(r) => {
                        waiting.push(r);
                        fresh = true;
                    }
                },
                _ = tokio::time::sleep(wait) => {}
            }
            if matches!(error, MaterializeError::Resnapshot(_)) {
                fresh = true;
            }
        }
    }
    .instrument(span)
    .await
}

/// Takes or resumes the copy, then applies the stream until it fails; `Ok` only
/// when the materializer is gone.
async fn follow(
    m: &Arc<Materializer>,
    name: &str,
    fresh: &mut bool,
    mailbox: &mut mpsc::Receiver<Refresh>,
    waiting: &mut Vec<Refresh>,
) -> Result<()> {
    let kept = &m.kept[name];
    let feed = match &kept.live {
        Some(Some(feed)) => Arc::clone(feed),
        _ => return Err(no_feed(&kept.dataset)),
    };
    let copy = m
        .store
        .copy_info(name)?
        .filter(|c| c.source == source_key(&kept.dataset) && c.position.is_some());
    let mut stream: Box<dyn ChangeStream> = match copy.filter(|_| !*fresh) {
        Some(copy) => {
            let position = copy.position.clone().unwrap_or_default();
            let stream = feed
                .resume(
                    &kept.dataset,
                    Arc::clone(&copy.schema),
                    &copy.key,
                    &position,
                )
                .await?;
            tracing::info!(%position, rows = copy.rows, "resuming the change feed");
            kept.status_mut().copied(&copy);
            stream
        }
        None => {
            kept.progress.store(0, Ordering::Relaxed);
            kept.status_mut().copying();
            let (info, stream) = snapshot_with_progress(m, name).await?;
            kept.status_mut().copied(&info);
            for w in waiting.drain(..) {
                let _ = w.send(Ok(info.clone()));
            }
            stream
        }
    };
    *fresh = false;
    m.notes.set(name, kept.status_mut().why_no_copy());

    let (work, queue) = mpsc::channel::<Work>(1);
    let store = Arc::clone(&m.store);
    let dataset = name.to_string();
    let sync = kept.dataset.mode.sync().is_some();
    let applier = tokio::task::spawn_blocking(move || apply_loop(store, dataset, sync, queue));
    let mut last_idle: Option<Instant> = None;
    let result = loop {
        let event = tokio::select! {
            e = stream.next() => match e {
                Ok(e) => e,
                Err(e) => break Err(MaterializeError::from(e)),
            },
            r = mailbox.recv() => match r {
                None => break Ok(()),
                Some(r) => {
                    waiting.push(r);
                    break Err(MaterializeError::Resnapshot(
                        "REFRESH MATERIALIZED VIEW asked for a new snapshot".into(),
                    ));
                }
            },
        };
        if let FeedEvent::Idle { .. } = &event {
            if last_idle.is_some_and(|t| t.elapsed() < IDLE_EVERY) {
                continue;
            }
            last_idle = Some(Instant::now());
        }
        let (reply, answer) = oneshot::channel();
        if work.send((event, reply)).await.is_err() {
            break Err(MaterializeError::Stopped(name.to_string()));
        }
        match answer.await {
            Ok(Ok(Some(applied))) => {
                // Durable here: only now may the origin forget it.
                stream.durable(&applied.position);
                kept.status_mut()
                    .applied(applied.rows, &applied.position, applied.lag_ms);
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => break Err(e),
            Err(_) => break Err(MaterializeError::Stopped(name.to_string())),
        }
    };
    drop(work);
    let _ = applier.await;
    result
}

/// Applies events on a blocking thread; a failed event abandons the open local
/// transaction (the stream restarts from the stored position).
fn apply_loop(
    store: Arc<LocalStore>,
    dataset: String,
    sync: bool,
    mut queue: mpsc::Receiver<Work>,
) {
    let mut applier: Option<Applier> = None;
    // The open transaction is a replay of our own (sync datasets).
    let mut own = false;
    while let Some((event, reply)) = queue.blocking_recv() {
        let result = (|| -> Result<Option<Applied>> {
            if applier.is_none() {
                let mut a = store.applier(&dataset)?;
                if sync {
                    a.for_sync()?;
                }
                applier = Some(a);
            }
            let a = applier.as_mut().expect("set above");
            Ok(match event {
                FeedEvent::Begin { transaction } => {
                    own = a.origin_transaction(transaction.as_deref())?;
                    a.begin()?;
                    None
                }
                FeedEvent::Changes(batch) => {
                    a.apply(&batch)?;
                    None
                }
                FeedEvent::AddColumns(fields) => {
                    a.add_columns(&fields)?;
                    None
                }
                FeedEvent::Commit {
                    position,
                    committed_at,
                } => {
                    if std::mem::take(&mut own) {
                        // Applied, not yet committed: the feed sends it again.
                        crate::crash::point("feed_before_own_commit");
                    }
                    a.commit(&position)?;
                    Some(Applied {
                        position,
                        rows: a.rows(),
                        lag_ms: (chrono::Utc::now() - committed_at).num_milliseconds(),
                    })
                }
                FeedEvent::Idle { position } => {
                    a.commit(&position)?;
                    Some(Applied {
                        position,
                        rows: a.rows(),
                        lag_ms: 0,
                    })
                }
            })
        })();
        if result.is_err() {
            // Dropping the applier rolls its open transaction back.
            applier = None;
        }
        let _ = reply.send(result);
    }
}

/// Takes a live snapshot, logging its progress at intervals.
async fn snapshot_with_progress(
    m: &Arc<Materializer>,
    name: &str,
) -> Result<(
    switchyard_connectors::local::CopyInfo,
    Box<dyn ChangeStream>,
)> {
    let kept = &m.kept[name];
    let Some(Some(feed)) = &kept.live else {
        return Err(no_feed(&kept.dataset));
    };
    let copy = snapshot::take_live(feed, &m.store, &kept.dataset, Arc::clone(&kept.progress));
    crate::worker::with_progress(&kept.progress, copy).await
}
