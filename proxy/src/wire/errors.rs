//! Maps errors from every phase to the SQLSTATE a PostgreSQL client expects.
//!
//! datafusion-postgres reports every DataFusion error as XX000; clients and ORMs
//! branch on the code, so we classify each error by its cause.

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use pgwire::api::{ClientInfo, ErrorHandler};
use pgwire::error::{ErrorInfo, PgWireError};
use switchyard_connectors::ConnectorError;
use switchyard_safety::SafetyError;

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
            let (code, message) = classify(inner.as_ref());
            *error =
                PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), code, message)));
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

/// The SQLSTATE and message for an error raised while planning or running a statement.
pub fn classify(error: &(dyn std::error::Error + 'static)) -> (String, String) {
    if let Some(df) = error.downcast_ref::<DataFusionError>() {
        return classify_datafusion(df);
    }
    if let Some(e) = error.downcast_ref::<datafusion::sql::sqlparser::parser::ParserError>() {
        return ("42601".into(), format!("syntax error: {e}"));
    }
    if let Some(e) = error.downcast_ref::<SafetyError>() {
        return (e.sqlstate().into(), e.to_string());
    }
    if let Some(e) = error.downcast_ref::<ConnectorError>() {
        return (e.sqlstate().into(), e.to_string());
    }
    ("XX000".into(), error.to_string())
}

fn classify_datafusion(error: &DataFusionError) -> (String, String) {
    // Look through wrappers (Context, Shared, External) for the cause that names the code.
    let mut current: &(dyn std::error::Error + 'static) = error;
    loop {
        if let Some(e) = current.downcast_ref::<ConnectorError>() {
            return (e.sqlstate().into(), e.to_string());
        }
        if let Some(e) = current.downcast_ref::<SafetyError>() {
            return (e.sqlstate().into(), e.to_string());
        }
        if let Some(e) = current.downcast_ref::<super::functions::UnknownSetting>() {
            return ("42704".into(), e.to_string());
        }
        if let Some(e) = current.downcast_ref::<datafusion::sql::sqlparser::parser::ParserError>() {
            return ("42601".into(), format!("syntax error: {e}"));
        }
        if let Some(df) = current.downcast_ref::<DataFusionError>() {
            match df {
                DataFusionError::External(inner) => {
                    current = inner.as_ref();
                    continue;
                }
                DataFusionError::Context(_, inner) => {
                    current = inner.as_ref();
                    continue;
                }
                DataFusionError::Shared(inner) => {
                    current = inner.as_ref();
                    continue;
                }
                DataFusionError::Diagnostic(_, inner) => {
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
            None => return ("XX000".into(), error.to_string()),
        }
    }
}

fn classify_leaf(error: &DataFusionError) -> (String, String) {
    let message = strip_prefix(&error.to_string());
    let code = match error {
        DataFusionError::SQL(..) => "42601",
        DataFusionError::SchemaError(e, _) => {
            let text = e.to_string();
            if text.contains("No field named") || text.contains("not found") {
                "42703"
            } else if text.contains("Ambiguous") || text.contains("ambiguous") {
                "42702"
            } else if text.contains("duplicate") || text.contains("Duplicate") {
                "42701"
            } else {
                "42P10"
            }
        }
        DataFusionError::Plan(text) => plan_code(text),
        DataFusionError::NotImplemented(_) => "0A000",
        DataFusionError::ResourcesExhausted(_) => "53200",
        DataFusionError::ArrowError(e, _) => arrow_code(e),
        DataFusionError::Execution(text) => {
            if text.contains("Divide by zero") || text.contains("division by zero") {
                "22012"
            } else if text.contains("Cannot cast") || text.contains("Cast error") {
                "22P02"
            } else {
                "XX000"
            }
        }
        _ => "XX000",
    };
    (code.into(), message)
}

fn plan_code(text: &str) -> &'static str {
    if text.contains("table '") && text.contains("not found") || text.contains("No table named") {
        "42P01"
    } else if text.contains("Invalid function")
        || text.contains("No function matches")
        || text.contains("Function") && text.contains("not found")
    {
        "42883"
    } else if text.contains("No field named") || text.contains("Schema error") {
        "42703"
    } else if text.contains("Cannot infer common argument type")
        || text.contains("Cannot coerce")
        || text.contains("type") && text.contains("mismatch")
    {
        "42804"
    } else if text.contains("Unsupported") || text.contains("unsupported") {
        "0A000"
    } else {
        // Plan errors are mistakes in the statement.
        "42000"
    }
}

fn arrow_code(e: &ArrowError) -> &'static str {
    match e {
        ArrowError::DivideByZero => "22012",
        ArrowError::CastError(_) | ArrowError::ParseError(_) => "22P02",
        ArrowError::ArithmeticOverflow(_) => "22003",
        ArrowError::ComputeError(_) | ArrowError::InvalidArgumentError(_) => "22023",
        _ => "XX000",
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
        assert_eq!(classify(&e).0, "08001");
    }

    #[test]
    fn planning_mistakes_are_not_internal_errors() {
        let e = DataFusionError::Plan("table 'switchyard.public.nope' not found".into());
        assert_eq!(
            classify(&e),
            (
                "42P01".into(),
                "table 'switchyard.public.nope' not found".into()
            )
        );
        let e = DataFusionError::Diagnostic(
            Box::new(datafusion::common::Diagnostic::new_error("x", None)),
            Box::new(DataFusionError::Plan("table 'a.b.c' not found".into())),
        );
        assert_eq!(classify(&e).0, "42P01");
        let e = DataFusionError::Plan("Invalid function 'nope'".into());
        assert_eq!(classify(&e).0, "42883");
    }
}
