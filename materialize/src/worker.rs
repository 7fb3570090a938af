//! One dataset's worker: copy at start, then again at each `refresh:` interval or
//! request; after a failure, again after a backoff (1 s doubling to 1 min) or at
//! the next request. Progress is logged while a copy runs.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::Instrument;

use crate::{snapshot, Materializer, Refresh, Result};
use switchyard_connectors::local::CopyInfo;

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often `serve` logs a running copy's progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

pub(crate) async fn run(m: Arc<Materializer>, name: String, mut mailbox: mpsc::Receiver<Refresh>) {
    let span = tracing::info_span!("materialize", dataset = %name);
    async move {
        let kept = &m.kept[&name];
        // A copy that was live keeps a feed at the origin (a slot holding WAL).
        if let Ok(Some(copy)) = m.store.copy_info(&name) {
            if let (Some(_), Some(feed)) = (copy.position, kept.origin.changes()) {
                match feed.drop_feed(&kept.dataset).await {
                    Ok(()) => tracing::info!("dropped the change feed of a dataset no longer live"),
                    Err(e) => tracing::warn!(error = %e, "could not drop the change feed of a dataset no longer live"),
                }
            }
        }
        let mut backoff = FIRST_BACKOFF;
        let mut waiting: Vec<Refresh> = Vec::new();
        loop {
            kept.progress.store(0, Ordering::Relaxed);
            kept.status_mut().copying();
            let result = copy_with_progress(&m, &name).await;
            let wait = match &result {
                Ok(info) => {
                    kept.status_mut().copied(info);
                    backoff = FIRST_BACKOFF;
                    kept.status_mut().refresh
                }
                Err(e) => {
                    let retry = chrono::Utc::now()
                        + chrono::Duration::from_std(backoff).unwrap_or_default();
                    kept.status_mut().failed(e, retry);
                    tracing::warn!(error = %e, retry_in = ?backoff, "copy failed; the last copy (if any) is served");
                    let this = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    Some(this)
                }
            };
            m.notes.set(&name, kept.status_mut().why_no_copy());
            for w in waiting.drain(..) {
                let _ = w.send(result.clone());
            }
            let request = match wait {
                Some(wait) => tokio::select! {
                    r = mailbox.recv() => Some(r),
                    _ = tokio::time::sleep(wait) => None,
                },
                None => Some(mailbox.recv().await),
            };
            match request {
                Some(None) => return, // the materializer is gone
                Some(Some(r)) => {
                    waiting.push(r);
                    while let Ok(more) = mailbox.try_recv() {
                        waiting.push(more);
                    }
                }
                None => {}
            }
        }
    }
    .instrument(span)
    .await
}

/// Takes one copy, logging its progress at intervals.
async fn copy_with_progress(m: &Arc<Materializer>, name: &str) -> Result<CopyInfo> {
    let kept = &m.kept[name];
    let copy = snapshot::take(
        &kept.origin,
        &m.store,
        &kept.dataset,
        Arc::clone(&kept.progress),
    );
    with_progress(&kept.progress, copy).await
}

/// Runs `copy`, logging the rows `progress` counts (and rows/s) at intervals.
pub(crate) async fn with_progress<T>(
    progress: &std::sync::atomic::AtomicU64,
    copy: impl std::future::Future<Output = T>,
) -> T {
    let started = Instant::now();
    tokio::pin!(copy);
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.tick().await;
    loop {
        tokio::select! {
            result = &mut copy => return result,
            _ = tick.tick() => {
                let rows = progress.load(Ordering::Relaxed);
                let secs = started.elapsed().as_secs_f64().max(0.001);
                tracing::info!(rows, rows_per_s = (rows as f64 / secs) as u64, "copying");
            }
        }
    }
}
