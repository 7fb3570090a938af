//! Errors at the pgwire door: engine errors become ErrorResponses with their
//! SQLSTATE (the mapping itself is the engine's, [`switchyard_engine::classify`]),
//! and pgwire's own errors are read back into engine errors for the audit log.

use pgwire::api::{ClientInfo, ErrorHandler};
use pgwire::error::{ErrorInfo, PgWireError};
use switchyard_engine::{classify, EngineError, SqlState};

/// The error handler installed on every connection.
#[derive(Debug, Default)]
pub struct SqlStateErrors;

impl ErrorHandler for SqlStateErrors {
    fn on_error<C>(&self, client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        // pgwire reports a failed SCRAM exchange without the user name; PostgreSQL names it.
        if let PgWireError::InvalidPassword(user) = error {
            if user.is_empty() {
                if let Some(name) = client.metadata().get(pgwire::api::METADATA_USER) {
                    user.clone_from(name);
                }
            }
            tracing::info!(user = %user, peer = %client.socket_addr(), "authentication failed");
        }
        if let PgWireError::ApiError(inner) = error {
            let (state, message) = classify(inner.as_ref());
            *error = user_error(state, message);
        }
        if let PgWireError::UserError(info) = error {
            let user = client
                .metadata()
                .get(pgwire::api::METADATA_USER)
                .map(String::as_str)
                .unwrap_or("");
            tracing::info!(%user, code = %info.code, message = %info.message, "statement failed");
        }
    }
}

/// An ERROR with a SQLSTATE.
pub fn user_error(state: SqlState, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        state.code().into(),
        message.into(),
    )))
}

/// An engine error as the client receives it.
pub fn pg_error(e: EngineError) -> PgWireError {
    match e {
        EngineError::Canceled => PgWireError::QueryCanceled,
        other => user_error(other.sqlstate(), other.to_string()),
    }
}

/// A DataFusion error as the client receives it.
pub fn df_error(e: datafusion::error::DataFusionError) -> PgWireError {
    pg_error(e.into())
}

/// A pgwire error read back as an engine error (for the audit record).
pub fn engine_error(e: &PgWireError) -> EngineError {
    match e {
        PgWireError::UserError(info) => EngineError::coded(
            SqlState::parse(&info.code).unwrap_or(SqlState::INTERNAL_ERROR),
            info.message.clone(),
        ),
        PgWireError::QueryCanceled => EngineError::Canceled,
        PgWireError::ApiError(inner) => {
            let (state, message) = classify(inner.as_ref());
            EngineError::coded(state, message)
        }
        other => EngineError::coded(SqlState::INTERNAL_ERROR, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_keep_their_codes_on_the_wire() {
        let PgWireError::UserError(info) = pg_error(EngineError::Timeout) else {
            panic!("a user error");
        };
        assert_eq!(info.code, "57014");
        assert!(matches!(
            pg_error(EngineError::Canceled),
            PgWireError::QueryCanceled
        ));
        let back = engine_error(&user_error(SqlState::UNDEFINED_TABLE, "nope"));
        assert_eq!(back.sqlstate(), SqlState::UNDEFINED_TABLE);
    }
}
