//! How a request fails: a kind (which decides the HTTP status), a SQLSTATE and a message.

use switchyard_engine::{EngineError, SqlState};

/// Result alias for step graphs.
pub type Result<T, E = StepError> = std::result::Result<T, E>;

/// The kinds of failure a door tells apart (REST maps each to an HTTP status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request is malformed or names what does not exist (400).
    Invalid,
    /// No or wrong credentials (401).
    Unauthenticated,
    /// The safety pipeline refused it (403).
    Denied,
    /// Nothing of that name for this user (404).
    NotFound,
    /// It ran past its time (504).
    Timeout,
    /// An origin could not be reached (502).
    OriginDown,
    /// The user runs too many statements already (429).
    TooMany,
    /// Anything else (500).
    Internal,
}

/// A failed request.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    /// What kind of failure.
    pub kind: Kind,
    /// Its SQLSTATE.
    pub code: SqlState,
    /// What went wrong, for the caller.
    pub message: String,
}

impl StepError {
    /// A malformed request (400, 22023 unless a closer code fits).
    pub fn invalid(message: impl Into<String>) -> Self {
        StepError {
            kind: Kind::Invalid,
            code: SqlState::INVALID_PARAMETER_VALUE,
            message: message.into(),
        }
    }

    /// A failure of `kind` with `code`.
    pub fn new(kind: Kind, code: SqlState, message: impl Into<String>) -> Self {
        StepError {
            kind,
            code,
            message: message.into(),
        }
    }

    /// The same failure with `prefix` before its message (e.g. the step it came from).
    pub fn context(mut self, prefix: &str) -> Self {
        self.message = format!("{prefix}: {}", self.message);
        self
    }
}

/// The kind a SQLSTATE belongs to.
pub fn kind_of(code: SqlState) -> Kind {
    let c = code.code();
    if code == SqlState::INSUFFICIENT_PRIVILEGE || code == SqlState::READ_ONLY_SQL_TRANSACTION {
        Kind::Denied
    } else if code == SqlState::QUERY_CANCELED {
        Kind::Timeout
    } else if c.starts_with("08") {
        Kind::OriginDown
    } else if code == SqlState::CONFIGURATION_LIMIT_EXCEEDED {
        Kind::TooMany
    } else if c.starts_with("42") || c.starts_with("22") || c.starts_with("0A") || c == "54000" {
        Kind::Invalid
    } else {
        Kind::Internal
    }
}

impl From<EngineError> for StepError {
    fn from(e: EngineError) -> Self {
        let code = e.sqlstate();
        let kind = match &e {
            EngineError::TooManyStatements { .. } => Kind::TooMany,
            EngineError::Timeout => Kind::Timeout,
            EngineError::RowCap { .. } | EngineError::ResultBytes { .. } => Kind::Invalid,
            _ => kind_of(code),
        };
        StepError {
            kind,
            code,
            message: e.to_string(),
        }
    }
}

impl From<datafusion::error::DataFusionError> for StepError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        let (code, message) = switchyard_engine::classify(&e);
        StepError {
            kind: kind_of(code),
            code,
            message,
        }
    }
}
