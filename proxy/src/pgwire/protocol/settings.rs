//! The session settings whose values change answers: `TimeZone`, and the identity
//! `SHOW` reports (`server_version`, `server_version_num`).
//!
//! datafusion-postgres's SET/SHOW hook takes `SET TIME ZONE x` but not `SET timezone
//! = x` (PostgreSQL's most common spelling, which it hands to DataFusion: literals
//! were then read in the new zone while values were still shown in the old one), has
//! no RESET, and answers `SHOW server_version` with its own name. This hook runs
//! before it and keeps the zone in one place for both readers: the client's metadata
//! (how values are shown, `pgwire::protocol::encode`) and DataFusion's
//! `execution.time_zone` (how literals are read and zone-dependent operations are
//! computed, `switchyard_planner::SessionZone`). A zone PostgreSQL would read
//! differently from us is refused (22023), never guessed.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::StringArray;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    ContextModifier, Expr, Reset, ResetStatement, Set, Statement, UnaryOperator, Value,
};
use datafusion_postgres::hooks::{HookClient, QueryHook};
use pgwire::api::results::{Response, Tag};
use pgwire::api::ClientInfo;
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::startup::ParameterStatus;
use pgwire::messages::PgWireBackendMessage;
use switchyard_engine::SqlState;

use crate::pgwire::pgcompat::identity;
use crate::pgwire::protocol::errors::user_error;

/// Where the session's zone is kept in the client's metadata (pgwire's startup
/// parameters, read by `encode::format_options`).
const ZONE_KEY: &str = "timezone";
/// The startup parameter's own spelling, kept so RESET can return to it.
const STARTUP_ZONE_KEY: &str = "TimeZone";
/// Where the zone the session started with is remembered.
const DEFAULT_ZONE_KEY: &str = "switchyard.default_timezone";

/// The hook; see the module documentation.
#[derive(Debug, Default)]
pub struct SettingsHook;

/// The zone a session starts in: its startup `TimeZone` (pgjdbc sends the JVM's,
/// libpq `PGTZ`), else UTC. Applied once after login.
pub fn start_session_zone(
    ctx: &SessionContext,
    metadata: &mut std::collections::HashMap<String, String>,
) -> PgWireResult<()> {
    let asked = metadata
        .get(STARTUP_ZONE_KEY)
        .or_else(|| metadata.get(ZONE_KEY))
        .cloned();
    let zone = match asked {
        Some(name) => zone_name(&name)?,
        None => "UTC".to_string(),
    };
    metadata.insert(DEFAULT_ZONE_KEY.into(), zone.clone());
    set_zone(ctx, metadata, &zone);
    Ok(())
}

fn set_zone(
    ctx: &SessionContext,
    metadata: &mut std::collections::HashMap<String, String>,
    zone: &str,
) {
    metadata.insert(ZONE_KEY.into(), zone.to_string());
    metadata.remove(STARTUP_ZONE_KEY);
    ctx.state_ref()
        .write()
        .config_mut()
        .options_mut()
        .execution
        .time_zone = Some(zone.to_string());
}

/// `name` as PostgreSQL would name the zone it means, if we read it the same way.
pub fn zone_name(name: &str) -> PgWireResult<String> {
    let trimmed = name.trim();
    if let Some(tz) = chrono_tz::TZ_VARIANTS
        .iter()
        .find(|tz| tz.name().eq_ignore_ascii_case(trimmed))
    {
        // PostgreSQL shows `utc` as `UTC`, and other names as the database spells them.
        return Ok(tz.name().to_string());
    }
    Err(PgWireError::UserError(Box::new({
        let mut info = pgwire::error::ErrorInfo::new(
            "ERROR".into(),
            SqlState::INVALID_PARAMETER_VALUE.code().into(),
            format!("invalid value for parameter \"TimeZone\": \"{trimmed}\""),
        );
        info.hint = Some(
            "use a zone name such as UTC, Europe/Berlin or America/New_York (offsets and \
             abbreviations are read differently by POSIX and ISO rules, so they are not accepted)"
                .into(),
        );
        info
    })))
}

/// The zone a `SET` value names (`'Europe/Paris'`, `UTC`, `-5`, `LOCAL`, `DEFAULT`);
/// `None` for the session's default.
fn zone_value(value: &Expr) -> PgWireResult<Option<String>> {
    let hours = |sign: i64, n: &str| -> PgWireResult<Option<String>> {
        match n.parse::<i64>() {
            // Etc/GMT+5 is five hours *west* (POSIX sign): UTC-5.
            Ok(0) => Ok(Some("UTC".into())),
            Ok(h) if (1..=14).contains(&h) => Ok(Some(format!(
                "Etc/GMT{}{h}",
                if sign < 0 { '+' } else { '-' }
            ))),
            _ => zone_name(n).map(Some),
        }
    };
    match value {
        Expr::Identifier(i) if i.quote_style.is_none() => {
            match i.value.to_ascii_lowercase().as_str() {
                "local" | "default" => Ok(None),
                _ => zone_name(&i.value).map(Some),
            }
        }
        Expr::Identifier(i) => zone_name(&i.value).map(Some),
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => {
                if s.eq_ignore_ascii_case("default") || s.eq_ignore_ascii_case("local") {
                    Ok(None)
                } else {
                    zone_name(s).map(Some)
                }
            }
            Value::Number(n, _) => hours(1, n),
            other => zone_name(&other.to_string()).map(Some),
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match expr.as_ref() {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => hours(-1, n),
                other => zone_name(&format!("-{other}")).map(Some),
            },
            other => zone_name(&format!("-{other}")).map(Some),
        },
        other => zone_name(&other.to_string()).map(Some),
    }
}

/// What a statement does to the zone, if it is about the zone.
enum ZoneStatement<'a> {
    Set(&'a Expr),
    Reset,
    /// `SET LOCAL`: until the transaction ends, which we do not track.
    Local,
}

fn zone_statement(statement: &Statement) -> Option<ZoneStatement<'_>> {
    let is_zone = |name: &str| name.eq_ignore_ascii_case("timezone");
    match statement {
        Statement::Set(Set::SingleAssignment {
            scope,
            hivevar: false,
            variable,
            values,
        }) if is_zone(&variable.to_string()) && values.len() == 1 => Some(match scope {
            Some(ContextModifier::Local) => ZoneStatement::Local,
            _ => ZoneStatement::Set(&values[0]),
        }),
        Statement::Set(Set::SetTimeZone { local: true, .. }) => Some(ZoneStatement::Local),
        Statement::Set(Set::SetTimeZone {
            local: false,
            value,
        }) => Some(ZoneStatement::Set(value)),
        Statement::Reset(ResetStatement {
            reset: Reset::ConfigurationParameter(name),
        }) if is_zone(&name.to_string()) => Some(ZoneStatement::Reset),
        _ => None,
    }
}

/// The setting a `SHOW` of these words names, if this hook answers it.
fn shown_name(variable: &[datafusion::sql::sqlparser::ast::Ident]) -> Option<&'static str> {
    let words: Vec<String> = variable
        .iter()
        .map(|i| i.value.to_ascii_lowercase())
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    Some(match words.as_slice() {
        ["timezone"] | ["time", "zone"] => "TimeZone",
        ["server_version"] => "server_version",
        ["server_version_num"] => "server_version_num",
        _ => return None,
    })
}

/// The setting and value `SHOW` answers from this hook.
fn shown(statement: &Statement, client: &dyn HookClient) -> Option<(&'static str, String)> {
    let Statement::ShowVariable { variable } = statement else {
        return None;
    };
    let name = shown_name(variable)?;
    let value = match name {
        "TimeZone" => client
            .metadata()
            .get(ZONE_KEY)
            .cloned()
            .unwrap_or_else(|| "UTC".into()),
        "server_version" => identity::SERVER_VERSION.into(),
        _ => identity::SERVER_VERSION_NUM.into(),
    };
    Some((name, value))
}

impl SettingsHook {
    async fn answer(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if let Some((name, value)) = shown(statement, client) {
            return Some(show(name, &value));
        }
        let change = zone_statement(statement)?;
        let zone = match change {
            ZoneStatement::Local => {
                return Some(Err(user_error(
                    SqlState::FEATURE_NOT_SUPPORTED,
                    "SET LOCAL TimeZone is not supported: use SET TimeZone (for the session)",
                )))
            }
            ZoneStatement::Reset => None,
            ZoneStatement::Set(value) => match zone_value(value) {
                Ok(zone) => zone,
                Err(e) => return Some(Err(e)),
            },
        };
        let zone = zone.unwrap_or_else(|| {
            client
                .metadata()
                .get(DEFAULT_ZONE_KEY)
                .cloned()
                .unwrap_or_else(|| "UTC".into())
        });
        set_zone(ctx, client.metadata_mut(), &zone);
        if let Err(e) = client
            .send_message(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(
                "TimeZone".into(),
                zone,
            )))
            .await
        {
            return Some(Err(e));
        }
        let tag = if matches!(statement, Statement::Reset(_)) {
            "RESET"
        } else {
            "SET"
        };
        Some(Ok(Response::Execution(Tag::new(tag))))
    }
}

/// The one text column a `SHOW name` answers in (what Describe reports).
pub(crate) fn show_schema(name: &str) -> datafusion::arrow::datatypes::SchemaRef {
    Arc::new(Schema::new(vec![Field::new(name, DataType::Utf8, false)]))
}

/// The answer of `SHOW name`: one row holding `value`.
pub(crate) fn show(name: &str, value: &str) -> PgWireResult<Response> {
    let schema = show_schema(name);
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(StringArray::from(vec![value]))],
    )
    .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    let fields = Arc::new(crate::pgwire::protocol::encode::pg_fields(
        &schema,
        &pgwire::api::portal::Format::UnifiedText,
        None,
    )?);
    let rows = crate::pgwire::protocol::encode::encode_batch(Arc::clone(&fields), batch);
    Ok(Response::Query(pgwire::api::results::QueryResponse::new(
        fields,
        futures::stream::iter(rows.collect::<Vec<_>>()),
    )))
}

#[async_trait]
impl QueryHook for SettingsHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.answer(statement, ctx, client).await
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        // The SHOWs answered here are described with their own column name; SET and
        // the rest get datafusion-postgres's plan (its hook follows this one).
        let Statement::ShowVariable { variable } = statement else {
            return None;
        };
        let name = shown_name(variable)?;
        Some(
            datafusion::common::DFSchema::try_from(show_schema(name))
                .map(|schema| {
                    LogicalPlan::EmptyRelation(datafusion::logical_expr::EmptyRelation {
                        produce_one_row: false,
                        schema: Arc::new(schema),
                    })
                })
                .map_err(|e| PgWireError::ApiError(Box::new(e))),
        )
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.answer(statement, ctx, client).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_names_are_read_as_postgresql_reads_them() {
        assert_eq!(zone_name("america/new_york").unwrap(), "America/New_York");
        assert_eq!(zone_name("UTC").unwrap(), "UTC");
        assert!(zone_name("+05:00").is_err());
        assert!(zone_name("Mars/Olympus").is_err());
        let num = |n: &str, minus: bool| {
            let v = Expr::value(Value::Number(n.into(), false));
            let e = if minus {
                Expr::UnaryOp {
                    op: UnaryOperator::Minus,
                    expr: Box::new(v),
                }
            } else {
                v
            };
            zone_value(&e).unwrap()
        };
        // SET TIME ZONE -5 is five hours behind UTC (ISO sign), POSIX's Etc/GMT+5.
        assert_eq!(num("5", true).as_deref(), Some("Etc/GMT+5"));
        assert_eq!(num("3", false).as_deref(), Some("Etc/GMT-3"));
        assert_eq!(num("0", false).as_deref(), Some("UTC"));
    }
}
