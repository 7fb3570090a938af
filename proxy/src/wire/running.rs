//! A statement while it runs: the guardrails enforced as rows stream (timeout,
//! result bytes, row cap), the user's concurrency slot, and the audit record written
//! when the statement ends — completed, failed, cancelled or dropped by the client.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::{Stream, StreamExt};
use pgwire::api::results::QueryResponse;
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use switchyard_config::RowCapAction;
use switchyard_safety::{AuditLog, AuditRecord, ErrorRecord, Limits};

type Rows = Pin<Box<dyn Stream<Item = PgWireResult<DataRow>> + Send>>;

/// Statements running per user, for `max_concurrent_statements`.
#[derive(Debug, Default)]
pub struct Slots {
    running: Mutex<HashMap<String, u32>>,
}

/// One running statement's slot; freed on drop.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    user: String,
}

impl Slots {
    /// Takes a slot for `user`, or fails with 53400 when they run `limit` already.
    pub fn acquire(
        self: &Arc<Self>,
        user: &str,
        limit: Option<u32>,
    ) -> Result<Option<Slot>, PgWireError> {
        let Some(limit) = limit else {
            return Ok(None);
        };
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let n = running.entry(user.to_string()).or_default();
        if *n >= limit {
            return Err(user_error(
                "53400",
                format!(
                    "too many concurrent statements for user {user} (max_concurrent_statements is {limit})"
                ),
            ));
        }
        *n += 1;
        Ok(Some(Slot {
            slots: Arc::clone(self),
            user: user.to_string(),
        }))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut running = self.slots.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = running.get_mut(&self.user) {
            *n = n.saturating_sub(1);
        }
    }
}

/// An ERROR with a SQLSTATE.
pub fn user_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        code.into(),
        message,
    )))
}

/// The SQLSTATE and message of an error, for the audit log.
pub fn error_record(e: &PgWireError) -> ErrorRecord {
    match e {
        PgWireError::UserError(info) => ErrorRecord {
            code: info.code.clone(),
            message: info.message.clone(),
        },
        PgWireError::QueryCanceled => ErrorRecord {
            code: "57014".into(),
            message: "canceling statement due to user request".into(),
        },
        PgWireError::ApiError(inner) => {
            let (code, message) = super::errors::classify(inner.as_ref());
            ErrorRecord { code, message }
        }
        other => ErrorRecord {
            code: "XX000".into(),
            message: other.to_string(),
        },
    }
}

/// The audit record of a statement, finished and written exactly once.
pub struct Audit {
    log: Arc<AuditLog>,
    record: AuditRecord,
    started: Instant,
    written: bool,
}

impl Audit {
    /// A record to complete; `started` is when the statement arrived.
    pub fn new(log: Arc<AuditLog>, record: AuditRecord, started: Instant) -> Self {
        Audit {
            log,
            record,
            started,
            written: false,
        }
    }

    /// The record so far.
    pub fn record(&self) -> &AuditRecord {
        &self.record
    }

    /// Writes the record with its outcome.
    pub fn finish(mut self, error: Option<ErrorRecord>) {
        self.write(error);
    }

    fn write(&mut self, error: Option<ErrorRecord>) {
        if self.written {
            return;
        }
        self.written = true;
        let r = &mut self.record;
        r.duration_us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        if r.outcome.is_empty() {
            r.outcome = match &error {
                None => "ok",
                Some(e) if e.code == "42501" || e.code == "25006" => "denied",
                Some(_) => "error",
            }
            .into();
        }
        r.error = error;
        if let Err(e) = self.log.append(r) {
            // The statement already ran; losing its record must be loud.
            tracing::error!(error = %e, path = %self.log.path().display(), "cannot write the audit log");
        }
    }
}

impl Drop for Audit {
    fn drop(&mut self) {
        // Dropped before finishing: the client went away or the stream was abandoned.
        if !self.written {
            self.record.outcome = "abandoned".into();
            self.write(Some(ErrorRecord {
                code: "57P01".into(),
                message: "statement abandoned before its end (client closed or stopped reading)"
                    .into(),
            }));
        }
    }
}

struct Guard {
    rows: Rows,
    limits: Limits,
    deadline: Option<tokio::time::Instant>,
    sent_rows: u64,
    sent_bytes: u64,
    audit: Option<Audit>,
    _slot: Option<Slot>,
    done: bool,
}

impl Guard {
    fn end(&mut self, error: Option<ErrorRecord>) {
        self.done = true;
        if let Some(mut audit) = self.audit.take() {
            audit.record.rows = self.sent_rows;
            audit.record.bytes = self.sent_bytes;
            audit.finish(error);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(audit) = &mut self.audit {
            audit.record.rows = self.sent_rows;
            audit.record.bytes = self.sent_bytes;
        }
    }
}

/// Wraps a response's rows with the runtime guardrails and the audit record.
pub fn guard(
    mut response: QueryResponse,
    limits: Limits,
    started: Instant,
    audit: Option<Audit>,
    slot: Option<Slot>,
) -> QueryResponse {
    let fields = response.row_schema();
    let tag = response.command_tag().to_owned();
    let rows: Rows = std::mem::replace(response.data_rows(), Box::pin(futures::stream::empty()));
    let deadline = limits
        .statement_timeout
        .map(|t| tokio::time::Instant::from_std(started + t));
    let state = Guard {
        rows,
        limits,
        deadline,
        sent_rows: 0,
        sent_bytes: 0,
        audit,
        _slot: slot,
        done: false,
    };
    let stream = futures::stream::unfold(state, |mut g| async move {
        if g.done {
            return None;
        }
        let next = match g.deadline {
            Some(d) => tokio::select! {
                biased;
                row = g.rows.next() => row,
                _ = tokio::time::sleep_until(d) => {
                    let e = user_error("57014", "canceling statement due to statement timeout".into());
                    g.end(Some(error_record(&e)));
                    return Some((Err(e), g));
                }
            },
            None => g.rows.next().await,
        };
        match next {
            None => {
                g.end(None);
                None
            }
            Some(Err(e)) => {
                g.end(Some(error_record(&e)));
                Some((Err(e), g))
            }
            Some(Ok(row)) => {
                if let Some(max) = g.limits.max_rows {
                    if g.sent_rows >= max {
                        // The plan yields max_rows + 1 rows when there were more.
                        return match g.limits.on_max_rows {
                            Some(RowCapAction::Error) => {
                                let e = user_error(
                                    "54000",
                                    format!("result exceeds max_rows ({max} rows)"),
                                );
                                g.end(Some(error_record(&e)));
                                Some((Err(e), g))
                            }
                            _ => {
                                if let Some(audit) = &mut g.audit {
                                    audit
                                        .record
                                        .warnings
                                        .push(format!("result cut to max_rows ({max} rows)"));
                                }
                                g.end(None);
                                None
                            }
                        };
                    }
                }
                let bytes = g.sent_bytes + row.data.len() as u64;
                if let Some(max) = g.limits.max_result_bytes {
                    if bytes > max {
                        let e = user_error(
                            "54000",
                            format!("result exceeds max_result_bytes ({max} bytes)"),
                        );
                        g.end(Some(error_record(&e)));
                        return Some((Err(e), g));
                    }
                }
                g.sent_rows += 1;
                g.sent_bytes = bytes;
                Some((Ok(row), g))
            }
        }
    });
    let mut out = QueryResponse::new(fields, stream);
    out.set_command_tag(&tag);
    out
}

/// For `on_max_rows: truncate`: reads up to `max + 1` rows ahead so the client can be
/// told with a NOTICE that rows were cut before they arrive. The cap bounds what is held.
pub async fn read_ahead(
    mut response: QueryResponse,
    max: u64,
) -> PgWireResult<(QueryResponse, bool)> {
    let fields = response.row_schema();
    let tag = response.command_tag().to_owned();
    let mut rows: Rows =
        std::mem::replace(response.data_rows(), Box::pin(futures::stream::empty()));
    let mut held = Vec::new();
    let mut cut = false;
    while let Some(row) = rows.next().await {
        let row = row?;
        if held.len() as u64 >= max {
            cut = true;
            break;
        }
        held.push(Ok(row));
    }
    drop(rows);
    let mut out = QueryResponse::new(fields, futures::stream::iter(held));
    out.set_command_tag(&tag);
    Ok((out, cut))
}
