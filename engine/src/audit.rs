//! One statement's audit record, finished and written exactly once: when the
//! statement completes, fails, is refused — or, if nothing finished it, when it is
//! dropped (the client went away or stopped reading).

use std::sync::Arc;
use std::time::Instant;

use switchyard_safety::{AuditLog, AuditRecord, ErrorRecord};
use switchyard_sqlstate::SqlState;

/// The audit record of a statement on its way to the log.
pub struct StatementAudit {
    log: Arc<AuditLog>,
    record: AuditRecord,
    started: Instant,
    written: bool,
}

impl StatementAudit {
    /// A record to complete; `started` is when the statement arrived.
    pub fn new(log: Arc<AuditLog>, record: AuditRecord, started: Instant) -> Self {
        StatementAudit {
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

    /// The record, to add what the statement did (rows, bytes, warnings).
    pub fn record_mut(&mut self) -> &mut AuditRecord {
        &mut self.record
    }

    /// Writes the record with its outcome (`None`: it succeeded).
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
            let denied = [
                SqlState::INSUFFICIENT_PRIVILEGE.code(),
                SqlState::READ_ONLY_SQL_TRANSACTION.code(),
            ];
            r.outcome = match &error {
                None => "ok",
                Some(e) if denied.contains(&e.code.as_str()) => "denied",
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

impl Drop for StatementAudit {
    fn drop(&mut self) {
        if !self.written {
            self.record.outcome = "abandoned".into();
            self.write(Some(ErrorRecord {
                code: SqlState::ADMIN_SHUTDOWN.code().into(),
                message: "statement abandoned before its end (client closed or stopped reading)"
                    .into(),
            }));
        }
    }
}

/// The time now as the audit log writes it.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
