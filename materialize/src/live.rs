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
use switchyard_connectors::local::{source_key, Applier};
use switchyard_sqlstate::SqlState;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::{snapshot, MaterializeError, Materializer, Refresh, Result};

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often an idle stream's position is stored (and so acknowledged).
const IDLE_EVERY: Duration = Duration::from_secs(1);
/// Origin transactions that arrive back to back share one durable local commit
/// (one fsync, not one each): the group is committed when no event follows
/// within `GROUP_WAIT`, when it is `GROUP_SPAN` old, or at `GROUP_MAX`
/// transactions. A reader sees a change at most this much later.
const GROUP_WAIT: Duration = Duration::from_millis(2);
const GROUP_SPAN: Duration = Duration::from_millis(50);
const GROUP_MAX: usize = 1000;

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

type Work = (FeedEvent, oneshot::Sender<Result<()>>);

/// What the applier's thread made durable since the stream last looked, or why
/// it stopped.
#[derive(Default)]
struct Reported {
    position: Option<String>,
    error: Option<MaterializeError>,
}

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

    let (work, queue) = std::sync::mpsc::channel::<Work>();
    let reported = Arc::new(std::sync::Mutex::new(Reported::default()));
    let applier = {
        let (m, dataset, reported) = (Arc::clone(m), name.to_string(), Arc::clone(&reported));
        let sync = kept.dataset.mode.sync().is_some();
        tokio::task::spawn_blocking(move || apply_loop(&m, &dataset, sync, queue, &reported))
    };
    let stopped = |reported: &std::sync::Mutex<Reported>| {
        lock(reported)
            .error
            .take()
            .unwrap_or_else(|| MaterializeError::Stopped(name.to_string()))
    };
    let mut last_idle: Option<Instant> = None;
    // The newest idle position not yet stored, and the last one stored.
    let mut idle: Option<String> = None;
    let mut stored_idle: Option<String> = None;
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
        // What the applier made durable since the last event (a quiet stream
        // still yields an idle event every 0.25 s): only now may the origin
        // forget it.
        let durable = lock(&reported).position.take();
        if let Some(position) = durable {
            stream.durable(&position);
        }
        let event = match event {
            FeedEvent::Idle { position } => {
                // Stored at most every IDLE_EVERY, and only when it moved; the
                // newest position waits for the next idle event, not dropped.
                if stored_idle.as_ref() != Some(&position) {
                    idle = Some(position);
                }
                if last_idle.is_some_and(|t| t.elapsed() < IDLE_EVERY) {
                    continue;
                }
                let Some(position) = idle.take() else {
                    continue;
                };
                last_idle = Some(Instant::now());
                stored_idle = Some(position.clone());
                FeedEvent::Idle { position }
            }
            other => {
                // A transaction moves the position past any idle one held.
                idle = None;
                stored_idle = None;
                other
            }
        };
        let (reply, answer) = oneshot::channel();
        if work.send((event, reply)).is_err() {
            break Err(stopped(&reported));
        }
        match answer.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => break Err(e),
            Err(_) => break Err(stopped(&reported)),
        }
    };
    drop(work);
    let _ = applier.await;
    result
}

fn lock(reported: &std::sync::Mutex<Reported>) -> std::sync::MutexGuard<'_, Reported> {
    reported.lock().unwrap_or_else(|p| p.into_inner())
}

/// Origin transactions applied and staged in the open local transaction.
struct Group {
    last: Applied,
    since: Instant,
    transactions: usize,
}

/// Applies events on a blocking thread, committing groups of origin transactions
/// (see [`GROUP_WAIT`]); a failed event abandons the open local transaction and
/// what it staged (the stream restarts from the stored position).
fn apply_loop(
    m: &Materializer,
    dataset: &str,
    sync: bool,
    queue: std::sync::mpsc::Receiver<Work>,
    reported: &std::sync::Mutex<Reported>,
) {
    let mut applier: Option<Applier> = None;
    let mut group: Option<Group> = None;
    // The open transaction is a replay of our own (sync datasets).
    let mut own = false;
    // Inside an origin transaction: the group cannot be committed now.
    let mut inside = false;
    let flush = |applier: &mut Option<Applier>, group: &mut Option<Group>| -> bool {
        let (Some(a), Some(g)) = (applier.as_mut(), group.take()) else {
            return true;
        };
        match a.flush() {
            Ok(()) => {
                m.kept[dataset]
                    .status_mut()
                    .applied(g.last.rows, &g.last.position, g.last.lag_ms);
                lock(reported).position = Some(g.last.position);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, transactions = g.transactions, "committing applied changes");
                *applier = None;
                lock(reported).error = Some(e.into());
                false
            }
        }
    };
    loop {
        let work = match &group {
            Some(g) if !inside => {
                let wait = GROUP_WAIT.min(GROUP_SPAN.saturating_sub(g.since.elapsed()));
                match queue.recv_timeout(wait) {
                    Ok(w) => w,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        if flush(&mut applier, &mut group) {
                            continue;
                        }
                        return;
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        flush(&mut applier, &mut group);
                        return;
                    }
                }
            }
            _ => match queue.recv() {
                Ok(w) => w,
                Err(_) => {
                    if !inside {
                        flush(&mut applier, &mut group);
                    }
                    return;
                }
            },
        };
        let (event, reply) = work;
        let result = (|| -> Result<Option<Applied>> {
            if applier.is_none() {
                let mut a = m.store.applier(dataset)?;
                if sync {
                    a.for_sync()?;
                }
                applier = Some(a);
            }
            let a = applier.as_mut().expect("set above");
            Ok(match event {
                FeedEvent::Begin { transaction } => {
                    inside = true;
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
                    a.stage(&position)?;
                    inside = false;
                    Some(Applied {
                        position,
                        rows: a.rows(),
                        lag_ms: (chrono::Utc::now() - committed_at).num_milliseconds(),
                    })
                }
                FeedEvent::Idle { position } => {
                    a.stage(&position)?;
                    Some(Applied {
                        position,
                        rows: a.rows(),
                        lag_ms: 0,
                    })
                }
            })
        })();
        let result = match result {
            Ok(Some(applied)) => {
                let g = match &mut group {
                    Some(g) => {
                        g.last = applied;
                        g.transactions += 1;
                        g
                    }
                    None => group.insert(Group {
                        last: applied,
                        since: Instant::now(),
                        transactions: 1,
                    }),
                };
                if g.transactions >= GROUP_MAX || g.since.elapsed() >= GROUP_SPAN {
                    flush(&mut applier, &mut group);
                }
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => {
                // Dropping the applier rolls its open transaction back, with
                // what the group staged: none of it was reported durable.
                applier = None;
                group = None;
                inside = false;
                Err(e)
            }
        };
        // A group that could not be committed stops the loop; the stream is told.
        let result = match lock(reported).error.take() {
            Some(e) => Err(e),
            None => result,
        };
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
