//! The planner: DataFusion with datafusion-federation, so that each origin's part of
//! a statement runs at the origin as one SQL statement and the rest runs here.
//!
//! [`session_state`] wires DataFusion's rules, the federation rule and our
//! [`AbsorbIntoFederated`] rule, which gives each origin its filters and columns.

mod absorb;
mod constant_group_keys;
mod datetime_input;
mod like_escape;
mod pg_text;
mod rewrite;
mod session_zone;
mod unfederated;

use std::sync::Arc;

use datafusion::execution::context::SessionState;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::SessionConfig;
use datafusion_federation::FederatedQueryPlanner;

pub use absorb::{portable, AbsorbIntoFederated};
pub use constant_group_keys::ConstantGroupKeys;
pub use datetime_input::DatetimeInput;
pub use like_escape::LikeEscape;
pub use pg_text::{timestamp_text, PgText, PgTimestampText};
pub use session_zone::{is_utc, SessionZone};
pub use unfederated::Unfederated;

/// The catalog clients see as their database.
pub const CATALOG: &str = "switchyard";
/// Schema for unqualified names.
pub const DEFAULT_SCHEMA: &str = "public";

/// Session configuration shared by every connection.
pub fn session_config() -> SessionConfig {
    let mut config = SessionConfig::new()
        .with_default_catalog_and_schema(CATALOG, DEFAULT_SCHEMA)
        .with_create_default_catalog_and_schema(true)
        .with_information_schema(true);
    let options = config.options_mut();
    // Utf8View strings from one origin joined with Utf8 from another panic in
    // datafusion-table-providers (STACK-NOTES); plain Utf8 everywhere avoids it.
    options.sql_parser.map_string_types_to_utf8view = false;
    options.execution.parquet.schema_force_view_types = false;
    // `0.01` is numeric in PostgreSQL, not a float: keep decimal arithmetic exact.
    options.sql_parser.parse_float_as_decimal = true;
    // PostgreSQL folds unquoted identifiers to lower case; so do we.
    options.sql_parser.enable_ident_normalization = true;
    // A session's TimeZone starts as UTC (PostgreSQL's `timestamptz`, `now()`); SET
    // TimeZone changes it per session.
    options.execution.time_zone = Some("UTC".into());
    config
}

/// A session state with federation, our pushdown rule and `LIKE ... ESCAPE` support.
pub fn session_state() -> SessionState {
    let mut rules = datafusion_federation::default_optimizer_rules();
    // Before the federation rule, which follows scalar_subquery_to_join.
    let decorrelated = rules
        .iter()
        .position(|r| r.name() == "scalar_subquery_to_join")
        .map_or(0, |p| p + 1);
    rules.insert(decorrelated, Arc::new(ConstantGroupKeys));
    // First: zone-dependent operations are marked local before anything is federated.
    rules.insert(0, Arc::new(SessionZone));
    // Before constant folding: literals in PostgreSQL's forms become Arrow's, and
    // constants cast to text are written as PostgreSQL writes them.
    rules.insert(
        0,
        Arc::new(PgText {
            constants_only: true,
        }),
    );
    rules.insert(0, Arc::new(DatetimeInput));
    rules.push(Arc::new(AbsorbIntoFederated));
    rules.push(Arc::new(LikeEscape));
    // After federation: only casts computed here.
    rules.push(Arc::new(PgText::default()));
    let mut state = SessionStateBuilder::new()
        .with_config(session_config())
        .with_default_features()
        .with_optimizer_rules(rules)
        .with_query_planner(Arc::new(FederatedQueryPlanner::new()))
        .build();
    // PostgreSQL's semantics where DataFusion's functions of the same names differ.
    // The replaced function goes with its aliases (`date_format` for `to_char`):
    // a state copied from this one (`new_from_existing`) re-registers every entry
    // in hash order, and an alias left behind could win the name back.
    for udf in switchyard_functions::scalar_functions() {
        use datafusion::execution::FunctionRegistry;
        let _ = state.deregister_udf(udf.name());
        let _ = state.register_udf(udf);
    }
    state
}

#[cfg(test)]
mod tests {
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    /// A copied state (each pgwire session's is one) keeps PostgreSQL's `to_char`,
    /// whatever order the copy registers functions in.
    #[tokio::test]
    async fn copies_of_the_state_keep_our_functions() {
        let base = super::session_state();
        for _ in 0..16 {
            let copy = SessionStateBuilder::new_from_existing(base.clone()).build();
            let ctx = SessionContext::new_with_state(copy);
            let batches = ctx
                .sql("SELECT to_char(DATE '2024-02-29', 'YYYY')")
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                .unwrap()
                .to_string();
            assert!(text.contains("| 2024"), "{text}");
        }
    }
}
