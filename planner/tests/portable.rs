//! Which predicates may be sent to an origin: only those whose meaning cannot differ there.

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::DFSchema;
use datafusion::prelude::SessionContext;
use switchyard_planner::portable;

fn check(sql: &str) -> bool {
    let schema = Schema::new(vec![
        Field::new("n", DataType::Int64, true),
        Field::new("t", DataType::Utf8, true),
        Field::new("f", DataType::Float64, true),
    ]);
    let schema = DFSchema::try_from_qualified_schema("x", &schema).unwrap();
    let ctx = SessionContext::new();
    let expr = ctx
        .parse_sql_expr(sql, &schema)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    portable(&expr, &schema)
}

#[test]
fn plain_comparisons_and_logic_are_portable() {
    for sql in [
        "n = 1",
        "n > 3 AND n <= 10",
        "t = 'gold' OR t IS NULL",
        "t IN ('a', 'b')",
        "NOT (n <> 2)",
        "n + 1 > 3",
        "n BETWEEN 1 AND 5",
        "t LIKE 'ab%'",
        "lower(t) = 'x'",
        "coalesce(n, 0) = 0",
    ] {
        assert!(check(sql), "{sql} should be pushed to the origin");
    }
}

#[test]
fn collation_time_zone_and_volatile_dependent_predicates_stay_local() {
    for sql in [
        "t < 'm'", // text ordering depends on the origin's collation
        "t BETWEEN 'a' AND 'm'",
        "t ILIKE 'ab%'",  // case folding of non-ASCII differs
        "random() > 0.5", // volatile
        "round(f) = 2",   // rounding modes differ
        "n / 2 = 1",      // division semantics differ
        "CASE WHEN n > 1 THEN 1 ELSE 0 END = 1",
        "now() > TIMESTAMP '2024-01-01 00:00:00'",
    ] {
        assert!(!check(sql), "{sql} must stay in Switchyard");
    }
}
