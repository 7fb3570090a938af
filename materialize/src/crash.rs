//! Crash points for durability tests: with `SWITCHYARD_CRASH_AT=<point>[:<n>]` in
//! its environment, the process kills itself with SIGKILL the n-th time (the
//! first by default) it reaches `point`, exactly as `kill -9` from outside would
//! at that step. Without the variable a crash point costs one atomic load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The crash points of the sync replay and the change feed, in the order an
/// entry passes them.
pub const POINTS: [&str; 5] = [
    "replay_before_claim",
    "replay_after_writes",
    "replay_after_origin_commit",
    "replay_after_finish",
    "feed_before_own_commit",
];

static SETTING: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

/// Dies here if the environment says so.
pub(crate) fn point(name: &str) {
    let setting = SETTING.get_or_init(|| {
        let v = std::env::var("SWITCHYARD_CRASH_AT").ok()?;
        let (point, n) = match v.split_once(':') {
            Some((p, n)) => (p.to_string(), n.parse().unwrap_or(1)),
            None => (v, 1),
        };
        Some((point, n))
    });
    let Some((point, n)) = setting else { return };
    if point != name || HITS.fetch_add(1, Ordering::SeqCst) + 1 != *n {
        return;
    }
    tracing::warn!(
        point = name,
        "crash point reached: killing the process (SIGKILL)"
    );
    let pid = std::process::id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status();
    // SIGKILL is not handled: nothing after this runs.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
