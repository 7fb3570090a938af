//! A materialized dataset's state, as its worker moves it and
//! `switchyard.datasets` shows it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use switchyard_connectors::local::CopyInfo;

/// Where a dataset's copy stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Taking the first copy: reads fail with 55000 until it is done.
    Snapshotting,
    /// Taking a new copy; reads go on from the current one.
    Refreshing,
    /// The copy is taken and served; the next refresh waits for its interval or a
    /// `REFRESH MATERIALIZED VIEW`.
    Ready,
    /// A live copy follows its origin's change feed.
    Streaming,
    /// The origin could not be reached; retried with backoff, the last copy (if
    /// any) is served.
    OriginDown,
    /// The copy failed for another reason (the local store full or unwritable,
    /// the origin refused the query); retried with backoff, the last copy served.
    Error,
}

impl State {
    /// The name `switchyard.datasets` shows.
    pub fn name(self) -> &'static str {
        match self {
            State::Snapshotting => "snapshotting",
            State::Refreshing => "refreshing",
            State::Ready => "ready",
            State::Streaming => "streaming",
            State::OriginDown => "origin down",
            State::Error => "error",
        }
    }

    /// Whether a copy is being taken.
    pub fn is_copying(self) -> bool {
        matches!(self, State::Snapshotting | State::Refreshing)
    }
}

/// One row of `switchyard.datasets`.
#[derive(Debug, Clone)]
pub struct DatasetStatus {
    /// `schema.name`.
    pub dataset: String,
    /// Its state.
    pub state: State,
    /// Rows in the copy served now (None: no copy yet).
    pub rows: Option<u64>,
    /// Rows copied so far by the snapshot running now.
    pub snapshot_rows: Option<u64>,
    /// When the served copy was taken (RFC 3339).
    pub last_refresh: Option<String>,
    /// When the next refresh is due.
    pub next_refresh: Option<DateTime<Utc>>,
    /// The configured interval.
    pub refresh: Option<Duration>,
    /// Whether the copy follows a change feed.
    pub live: bool,
    /// Whether the copy also takes writes (`mode: sync`).
    pub sync: bool,
    /// Live copies: the feed's position the copy stands at (LSN, resume token).
    pub position: Option<String>,
    /// Live copies: how far the copy was behind the origin's commit when it
    /// applied the last transaction (0 once caught up and idle).
    pub lag_ms: Option<i64>,
    /// Why the last attempt failed, with its SQLSTATE.
    pub last_error: Option<String>,
}

impl DatasetStatus {
    /// A dataset with no copy yet.
    pub fn new(dataset: &str, refresh: Option<Duration>, live: bool) -> Self {
        DatasetStatus {
            dataset: dataset.to_string(),
            state: State::Snapshotting,
            rows: None,
            snapshot_rows: None,
            last_refresh: None,
            next_refresh: None,
            refresh,
            live,
            sync: false,
            position: None,
            lag_ms: None,
            last_error: None,
        }
    }

    /// A copy was committed.
    pub fn copied(&mut self, copy: &CopyInfo) {
        self.state = if self.live {
            State::Streaming
        } else {
            State::Ready
        };
        self.rows = Some(copy.rows);
        self.position = copy.position.clone();
        self.snapshot_rows = None;
        self.last_refresh = Some(copy.copied_at.clone());
        self.last_error = None;
        self.next_refresh = self
            .refresh
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .map(|d| Utc::now() + d);
    }

    /// A live copy applied a transaction (or stored an idle position).
    pub fn applied(&mut self, rows: u64, position: &str, lag_ms: i64) {
        self.state = State::Streaming;
        self.rows = Some(rows);
        self.position = Some(position.to_string());
        self.lag_ms = Some(lag_ms.max(0));
        self.last_error = None;
        self.next_refresh = None;
    }

    /// A copy is starting.
    pub fn copying(&mut self) {
        self.state = match self.rows {
            Some(_) => State::Refreshing,
            None => State::Snapshotting,
        };
        self.snapshot_rows = Some(0);
    }

    /// A copy failed; the next attempt is at `retry`.
    pub fn failed(&mut self, error: &crate::MaterializeError, retry: DateTime<Utc>) {
        self.state = if error.origin_down() {
            State::OriginDown
        } else {
            State::Error
        };
        self.snapshot_rows = None;
        self.last_error = Some(format!("{} ({})", error, error.sqlstate()));
        self.next_refresh = Some(retry);
    }

    /// What a statement reading the dataset is told while there is no copy.
    pub fn why_no_copy(&self) -> String {
        match (self.state, &self.last_error) {
            (State::OriginDown | State::Error, Some(e)) => format!(
                "{}: {e}; retried at {}",
                self.state.name(),
                self.next_refresh
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default()
            ),
            _ => "the first snapshot is being taken; see switchyard.datasets".into(),
        }
    }
}
