//! [`EngineError`]: why a statement did not run or stopped, with its one SQLSTATE.
//!
//! Errors from every phase end here: the safety pipeline's refusals, the guardrails
//! while rows stream, and DataFusion's errors, which [`classify`] maps by their
//! variants (and, where DataFusion has only a message — `Plan`, `Execution` — by the
//! message; `tests` pins each mapping on errors DataFusion really raises, so an
//! upgrade that rewords one fails a test instead of changing a client's code).

use datafusion::arrow::error::ArrowError;
use datafusion::common::SchemaError;
use datafusion::error::DataFusionError;
use switchyard_connectors::ConnectorError;
use switchyard_safety::{ErrorRecord, SafetyError};
use switchyard_sqlstate::{CodedError, SqlState};

/// Result alias for the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Why a statement failed or was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// The safety pipeline refused it.
    #[error(transparent)]
    Refused(#[from] SafetyError),
    /// The client cancelled it (CancelRequest).
    #[error("canceling statement due to user request")]
    Canceled,
    /// It ran past the statement timeout.
    #[error("canceling statement due to statement timeout")]
    Timeout,
    /// More rows than `max_rows` with `on_max_rows: error`.
    #[error("result exceeds max_rows ({max} rows)")]
    RowCap {
        /// The cap.
        max: u64,
    },
    /// A result larger than `max_result_bytes`.
    #[error("result exceeds max_result_bytes ({max} bytes)")]
    ResultBytes {
        /// The cap.
        max: u64,
    },
    /// The user already runs `max_concurrent_statements`.
    #[error(
        "too many concurrent statements for user {user} (max_concurrent_statements is {limit})"
    )]
    TooManyStatements {
        /// The user.
        user: String,
        /// Their limit.
        limit: u32,
    },
    /// The audit log cannot be written: statements fail closed.
    #[error("the audit log cannot be written ({reason}); statements are refused until it can")]
    AuditUnwritable {
        /// The I/O error.
        reason: String,
        /// Whether the disk is full (53100) rather than another I/O error (58030).
        disk_full: bool,
    },
    /// Any other error, already classified.
    #[error(transparent)]
    Coded(#[from] CodedError),
}

impl EngineError {
    /// An error with a SQLSTATE and message.
    pub fn coded(state: SqlState, message: impl Into<String>) -> Self {
        EngineError::Coded(CodedError::new(state, message))
    }

    /// The SQLSTATE a client sees.
    pub fn sqlstate(&self) -> SqlState {
        match self {
            EngineError::Refused(e) => e.sqlstate(),
            EngineError::Canceled | EngineError::Timeout => SqlState::QUERY_CANCELED,
            EngineError::RowCap { .. } | EngineError::ResultBytes { .. } => {
                SqlState::PROGRAM_LIMIT_EXCEEDED
            }
            EngineError::TooManyStatements { .. } => SqlState::CONFIGURATION_LIMIT_EXCEEDED,
            EngineError::AuditUnwritable { disk_full, .. } => {
                if *disk_full {
                    SqlState::DISK_FULL
                } else {
                    SqlState::IO_ERROR
                }
            }
            EngineError::Coded(e) => e.state,
        }
    }

    /// The error as the audit log records it.
    pub fn record(&self) -> ErrorRecord {
        ErrorRecord {
            code: self.sqlstate().code().to_string(),
            message: self.to_string(),
        }
    }
}

impl From<DataFusionError> for EngineError {
    fn from(e: DataFusionError) -> Self {
        let (state, message) = classify(&e);
        EngineError::coded(state, message)
    }
}

impl From<ConnectorError> for EngineError {
    fn from(e: ConnectorError) -> Self {
        EngineError::coded(e.sqlstate(), e.to_string())
    }
}

/// The SQLSTATE and message for an error raised while planning or running a statement.
pub fn classify(error: &(dyn std::error::Error + 'static)) -> (SqlState, String) {
    // Look through wrappers (Context, Shared, External, ...) for the cause that names the code.
    let mut current: &(dyn std::error::Error + 'static) = error;
    loop {
        if let Some(e) = current.downcast_ref::<EngineError>() {
            return (e.sqlstate(), e.to_string());
        }
        if let Some(e) = current.downcast_ref::<CodedError>() {
            return (e.state, e.message.clone());
        }
        if let Some(e) = current.downcast_ref::<ConnectorError>() {
            return (e.sqlstate(), e.to_string());
        }
        if let Some(e) = current.downcast_ref::<SafetyError>() {
            return (e.sqlstate(), e.to_string());
        }
        if let Some(e) = current.downcast_ref::<datafusion::sql::sqlparser::parser::ParserError>() {
            return (SqlState::SYNTAX_ERROR, format!("syntax error: {e}"));
        }
        if let Some(df) = current.downcast_ref::<DataFusionError>() {
            match df {
                DataFusionError::External(inner) => {
                    current = inner.as_ref();
                    continue;
                }
                DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
                    current = inner.as_ref();
                    continue;
                }
                DataFusionError::Shared(inner) => {
                    current = inner.as_ref();
                    continue;
                }
                DataFusionError::Collection(errors) if !errors.is_empty() => {
                    current = &errors[0];
                    continue;
                }
                _ => return classify_leaf(df),
            }
        }
        match current.source() {
            Some(next) => current = next,
            None => return (SqlState::INTERNAL_ERROR, error.to_string()),
        }
    }
}

fn classify_leaf(error: &DataFusionError) -> (SqlState, String) {
    let message = strip_prefix(&error.to_string());
    let state = match error {
        DataFusionError::SQL(..) => SqlState::SYNTAX_ERROR,
        DataFusionError::SchemaError(e, _) => match e.as_ref() {
            SchemaError::FieldNotFound { .. } => SqlState::UNDEFINED_COLUMN,
            SchemaError::AmbiguousReference { .. } => SqlState::AMBIGUOUS_COLUMN,
            SchemaError::DuplicateQualifiedField { .. }
            | SchemaError::DuplicateUnqualifiedField { .. } => SqlState::DUPLICATE_COLUMN,
        },
        // DataFusion has no variants below these two: their messages tell.
        DataFusionError::Plan(text) => plan_state(text),
        DataFusionError::Execution(text) => execution_state(text),
        DataFusionError::NotImplemented(_) => SqlState::FEATURE_NOT_SUPPORTED,
        DataFusionError::ResourcesExhausted(_) => SqlState::OUT_OF_MEMORY,
        DataFusionError::ArrowError(e, _) => arrow_state(e),
        _ => SqlState::INTERNAL_ERROR,
    };
    (state, message)
}

fn plan_state(text: &str) -> SqlState {
    if text.contains("table '") && text.contains("not found") || text.contains("No table named") {
        SqlState::UNDEFINED_TABLE
    } else if text.contains("Invalid function")
        || text.contains("No function matches")
        || text.contains("Function") && text.contains("not found")
    {
        SqlState::UNDEFINED_FUNCTION
    } else if text.contains("No field named") || text.contains("Schema error") {
        SqlState::UNDEFINED_COLUMN
    } else if text.contains("Cannot infer common argument type")
        || text.contains("Cannot coerce")
        || text.contains("type") && text.contains("mismatch")
    {
        SqlState::DATATYPE_MISMATCH
    } else if text.contains("Unsupported") || text.contains("unsupported") {
        SqlState::FEATURE_NOT_SUPPORTED
    } else {
        // Plan errors are mistakes in the statement.
        SqlState::SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION
    }
}

fn execution_state(text: &str) -> SqlState {
    if text.contains("Divide by zero") || text.contains("division by zero") {
        SqlState::DIVISION_BY_ZERO
    } else if text.contains("Cannot cast") || text.contains("Cast error") {
        SqlState::INVALID_TEXT_REPRESENTATION
    } else {
        SqlState::INTERNAL_ERROR
    }
}

fn arrow_state(e: &ArrowError) -> SqlState {
    match e {
        ArrowError::DivideByZero => SqlState::DIVISION_BY_ZERO,
        ArrowError::CastError(_) | ArrowError::ParseError(_) => {
            SqlState::INVALID_TEXT_REPRESENTATION
        }
        ArrowError::ArithmeticOverflow(_) => SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
        ArrowError::ComputeError(_) | ArrowError::InvalidArgumentError(_) => {
            SqlState::INVALID_PARAMETER_VALUE
        }
        _ => SqlState::INTERNAL_ERROR,
    }
}

/// Drops DataFusion's "Error during planning: " style prefixes, which mean nothing to a SQL user.
fn strip_prefix(message: &str) -> String {
    const PREFIXES: &[&str] = &[
        "Error during planning: ",
        "Schema error: ",
        "SQL error: ",
        "This feature is not implemented: ",
        "Execution error: ",
        "Arrow error: ",
        "External error: ",
    ];
    let mut m = message;
    loop {
        match PREFIXES.iter().find(|p| m.starts_with(*p)) {
            Some(p) => m = &m[p.len()..],
            None => return m.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    /// The code DataFusion's own error for `sql` maps to (planned, then run).
    async fn code_of(sql: &str) -> String {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t (a INT, b TEXT) AS VALUES (1, 'x')")
            .await
            .expect("fixture")
            .collect()
            .await
            .expect("fixture");
        ctx.sql("CREATE TABLE u (a INT) AS VALUES (1)")
            .await
            .expect("fixture")
            .collect()
            .await
            .expect("fixture");
        let result = match ctx.sql(sql).await {
            Ok(df) => df.collect().await.map(|_| ()),
            Err(e) => Err(e),
        };
        let e = result.expect_err(sql);
        classify(&e).0.code().to_string()
    }

    #[tokio::test]
    async fn datafusion_errors_map_to_postgres_codes() {
        for (sql, code) in [
            ("SELECT * FROM nope", "42P01"),
            ("SELECT nope FROM t", "42703"),
            ("SELECT a FROM t, u", "42702"),
            ("SELECT nope(a) FROM t", "42883"),
            ("SELECT a FROM t WHERE", "42601"),
            ("SELECT 1 / 0", "22012"),
            ("SELECT CAST(b AS INT) FROM t", "22P02"),
            ("SELECT a FROM t GROUP BY b", "42000"),
        ] {
            assert_eq!(code_of(sql).await, code, "{sql}");
        }
    }

    #[test]
    fn connector_errors_keep_their_codes_through_wrappers() {
        let e = DataFusionError::Context(
            "scan".into(),
            Box::new(DataFusionError::External(Box::new(
                ConnectorError::Unreachable {
                    origin: "sales".into(),
                    message: "refused".into(),
                },
            ))),
        );
        assert_eq!(classify(&e).0, SqlState::UNABLE_TO_CONNECT);
        let e = DataFusionError::External(Box::new(CodedError::new(
            SqlState::UNDEFINED_OBJECT,
            "unrecognized configuration parameter \"x\"",
        )));
        assert_eq!(classify(&e).0, SqlState::UNDEFINED_OBJECT);
    }

    #[test]
    fn planning_mistakes_are_not_internal_errors() {
        let e = DataFusionError::Plan("table 'switchyard.public.nope' not found".into());
        assert_eq!(
            classify(&e),
            (
                SqlState::UNDEFINED_TABLE,
                "table 'switchyard.public.nope' not found".into()
            )
        );
        let e = DataFusionError::Diagnostic(
            Box::new(datafusion::common::Diagnostic::new_error("x", None)),
            Box::new(DataFusionError::Plan("table 'a.b.c' not found".into())),
        );
        assert_eq!(classify(&e).0, SqlState::UNDEFINED_TABLE);
        let e = DataFusionError::Plan("Invalid function 'nope'".into());
        assert_eq!(classify(&e).0, SqlState::UNDEFINED_FUNCTION);
    }

    #[test]
    fn engine_errors_have_their_codes() {
        assert_eq!(EngineError::Timeout.sqlstate().code(), "57014");
        assert_eq!(EngineError::RowCap { max: 5 }.sqlstate().code(), "54000");
        let full = EngineError::AuditUnwritable {
            reason: "no space".into(),
            disk_full: true,
        };
        assert_eq!(full.sqlstate().code(), "53100");
        assert_eq!(full.record().code, "53100");
    }
}
