//! `session_zone`: timestamptz operations computed in the session's TimeZone, as
//! PostgreSQL computes them.
//!
//! A timestamptz value is an instant; Arrow tags it with a zone (an origin's column
//! with `UTC`), and every zone-dependent operation — a cast to `date`, `timestamp`,
//! `time` or text, `extract`, `date_trunc`, `to_char`, adding an interval of days or
//! months, reading a `timestamp` or `date` as a timestamptz — uses that tag. PostgreSQL
//! uses the session's `TimeZone` instead. When the session's zone is not UTC, this
//! rule retags the instant to the session's zone just under each such operation
//! (same instant, so comparisons and joins are unchanged), and casts a timestamp
//! result back to the type the plan had.
//!
//! Origins compute in UTC (their sessions are pinned to it), so a statement with a
//! retagged operation reads its federated tables one by one (`Unfederated`): the
//! operation runs here, filters the origin can compute the same still go there.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::logical_expr::expr::{Cast, ScalarFunction, TryCast};
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, LogicalPlan, Operator};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

use crate::Unfederated;

/// The optimizer rule; see the module documentation.
#[derive(Debug, Default)]
pub struct SessionZone;

/// Whether `zone` is UTC under one of its names (nothing to retag).
pub fn is_utc(zone: &str) -> bool {
    matches!(
        zone.to_ascii_lowercase().as_str(),
        "utc"
            | "etc/utc"
            | "z"
            | "zulu"
            | "gmt"
            | "etc/gmt"
            | "universal"
            | "etc/universal"
            | "+00:00"
            | "+00"
            | "etc/zulu"
            | "gmt0"
            | "etc/gmt0"
            | "etc/gmt+0"
            | "etc/gmt-0"
            | "greenwich"
            | "etc/greenwich"
            | "uct"
            | "etc/uct"
    )
}

/// Functions whose answer on a timestamptz depends on the zone it is read in.
const ZONED_FUNCTIONS: &[&str] = &[
    "date_part",
    "date_trunc",
    "to_char",
    "datepart",
    "datetrunc",
];

impl OptimizerRule for SessionZone {
    fn name(&self) -> &str {
        "session_zone"
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let Some(zone) = config.options().execution.time_zone.clone() else {
            return Ok(Transformed::no(plan));
        };
        if is_utc(&zone) {
            return Ok(Transformed::no(plan));
        }
        let zone: Arc<str> = Arc::from(zone.as_str());
        let local = std::cell::Cell::new(false);
        let rewritten =
            plan.transform_up_with_subqueries(|node| retag_node(node, &zone, &local))?;
        if !local.get() {
            return Ok(rewritten);
        }
        // Something now runs in the session's zone: keep every federated scan's
        // operations here.
        let plan = rewritten.data.transform_up_with_subqueries(unfederate)?;
        Ok(Transformed::yes(plan.data))
    }
}

/// Retags `node`'s zone-dependent operations; sets `local` when one of them must be
/// computed here (text read as a timestamptz by a literal's cast need not be: it
/// folds to an instant).
fn retag_node(
    node: LogicalPlan,
    zone: &Arc<str>,
    local: &std::cell::Cell<bool>,
) -> Result<Transformed<LogicalPlan>> {
    if matches!(node, LogicalPlan::TableScan(_) | LogicalPlan::Extension(_)) {
        return Ok(Transformed::no(node));
    }
    crate::rewrite::map_node_expressions(node, |e, schema| {
        let literal_text = literal_text_cast(&e);
        let r = retag_expr(e, schema, zone)?;
        if r.transformed && !literal_text {
            local.set(true);
        }
        Ok(r)
    })
}

/// The zone a timestamptz expression is tagged with, if it is one and not `zone`.
fn other_zone(e: &Expr, schema: &DFSchema, zone: &str) -> Option<TimeUnit> {
    match e.get_type(schema).ok()? {
        DataType::Timestamp(unit, Some(tz)) if tz.as_ref() != zone => Some(unit),
        _ => None,
    }
}

fn in_zone(e: Expr, unit: TimeUnit, zone: &Arc<str>) -> Expr {
    Expr::Cast(Cast::new(
        Box::new(e),
        DataType::Timestamp(unit, Some(Arc::clone(zone))),
    ))
}

fn retag_expr(e: Expr, schema: &DFSchema, zone: &Arc<str>) -> Result<Transformed<Expr>> {
    match e {
        // timestamptz → date / timestamp / time / text: the local reading.
        Expr::Cast(Cast { expr, field })
            if zone_reading(field.data_type()) && other_zone(&expr, schema, zone).is_some() =>
        {
            let unit = other_zone(&expr, schema, zone).expect("checked");
            Ok(Transformed::yes(Expr::Cast(Cast {
                expr: Box::new(local(*expr, unit, zone, field.data_type())),
                field,
            })))
        }
        Expr::TryCast(TryCast { expr, field })
            if zone_reading(field.data_type()) && other_zone(&expr, schema, zone).is_some() =>
        {
            let unit = other_zone(&expr, schema, zone).expect("checked");
            Ok(Transformed::yes(Expr::TryCast(TryCast {
                expr: Box::new(local(*expr, unit, zone, field.data_type())),
                field,
            })))
        }
        // text → timestamptz: a time without offset is the session zone's.
        Expr::Cast(Cast { expr, field })
            if text_to_zoned(&expr, schema, field.data_type(), zone) =>
        {
            let DataType::Timestamp(unit, _) = field.data_type() else {
                unreachable!("checked")
            };
            let read = Expr::Cast(Cast::new(
                expr,
                DataType::Timestamp(*unit, Some(Arc::clone(zone))),
            ));
            Ok(Transformed::yes(Expr::Cast(Cast {
                expr: Box::new(read),
                field,
            })))
        }
        // timestamp / date → timestamptz: the local time in the session's zone.
        Expr::Cast(Cast { expr, field })
            if naive_to_zoned(&expr, schema, field.data_type(), zone) =>
        {
            let DataType::Timestamp(unit, _) = field.data_type() else {
                unreachable!("checked")
            };
            let local = in_zone(*expr, *unit, zone);
            Ok(Transformed::yes(Expr::Cast(Cast {
                expr: Box::new(local),
                field,
            })))
        }
        Expr::ScalarFunction(f)
            if ZONED_FUNCTIONS.contains(&f.name())
                && f.args.iter().any(|a| other_zone(a, schema, zone).is_some()) =>
        {
            let original = Expr::ScalarFunction(f.clone()).get_type(schema)?;
            let ScalarFunction { func, args } = f;
            let args = args
                .into_iter()
                .map(|a| match other_zone(&a, schema, zone) {
                    Some(unit) => in_zone(a, unit, zone),
                    None => a,
                })
                .collect();
            let call = Expr::ScalarFunction(ScalarFunction { func, args });
            Ok(Transformed::yes(back_to(call, original)))
        }
        // timestamptz ± interval: days and months counted on the local calendar.
        Expr::BinaryExpr(BinaryExpr { left, op, right })
            if matches!(op, Operator::Plus | Operator::Minus)
                && (is_interval(&left, schema) || is_interval(&right, schema))
                && (other_zone(&left, schema, zone).is_some()
                    || other_zone(&right, schema, zone).is_some()) =>
        {
            let original = Expr::BinaryExpr(BinaryExpr::new(left.clone(), op, right.clone()))
                .get_type(schema)?;
            let side = |e: Box<Expr>| match other_zone(&e, schema, zone) {
                Some(unit) => Box::new(in_zone(*e, unit, zone)),
                None => e,
            };
            let sum = Expr::BinaryExpr(BinaryExpr::new(side(left), op, side(right)));
            Ok(Transformed::yes(back_to(sum, original)))
        }
        other => Ok(Transformed::no(other)),
    }
}

/// What a cast to `target` reads of `e`: the instant in the session's zone, or (for
/// a timestamp or time without zone) its local wall-clock time, which Arrow's cast
/// would take in UTC.
fn local(e: Expr, unit: TimeUnit, zone: &Arc<str>, target: &DataType) -> Expr {
    let zoned = in_zone(e, unit, zone);
    match target {
        DataType::Timestamp(_, None) | DataType::Time32(_) | DataType::Time64(_) => {
            datafusion::functions::datetime::expr_fn::to_local_time(vec![zoned])
        }
        _ => zoned,
    }
}

/// A cast whose answer reads the instant's local date or time.
fn zone_reading(target: &DataType) -> bool {
    matches!(
        target,
        DataType::Date32
            | DataType::Date64
            | DataType::Timestamp(_, None)
            | DataType::Time32(_)
            | DataType::Time64(_)
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
    )
}

fn naive_to_zoned(expr: &Expr, schema: &DFSchema, target: &DataType, zone: &str) -> bool {
    let DataType::Timestamp(_, Some(tz)) = target else {
        return false;
    };
    if tz.as_ref() == zone {
        return false;
    }
    matches!(
        expr.get_type(schema),
        Ok(DataType::Timestamp(_, None) | DataType::Date32 | DataType::Date64)
    )
}

fn text_to_zoned(expr: &Expr, schema: &DFSchema, target: &DataType, zone: &str) -> bool {
    let DataType::Timestamp(_, Some(tz)) = target else {
        return false;
    };
    tz.as_ref() != zone
        && matches!(
            expr.get_type(schema),
            Ok(DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
        )
}

/// A cast of a text literal (folded to a constant before anything runs).
fn literal_text_cast(e: &Expr) -> bool {
    matches!(e, Expr::Cast(Cast { expr, .. }) if matches!(expr.as_ref(), Expr::Literal(..)))
}

fn is_interval(e: &Expr, schema: &DFSchema) -> bool {
    matches!(e.get_type(schema), Ok(DataType::Interval(_)))
}

/// `e` cast to `original` when retagging changed its type (same instant).
fn back_to(e: Expr, original: DataType) -> Expr {
    match &original {
        DataType::Timestamp(_, Some(_)) => Expr::Cast(Cast::new(Box::new(e), original)),
        _ => e,
    }
}

/// A federated scan read on its own (its operations stay here); others unchanged.
fn unfederate(node: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    let LogicalPlan::TableScan(mut scan) = node else {
        return Ok(Transformed::no(node));
    };
    let Ok(provider) = source_as_provider(&scan.source) else {
        return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
    };
    if provider.downcast_ref::<Unfederated>().is_some()
        || datafusion_federation::get_table_source(&scan.source)
            .ok()
            .flatten()
            .is_none()
    {
        return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
    }
    scan.source = provider_as_source(Arc::new(Unfederated::new(
        scan.table_name.clone(),
        provider,
    )));
    Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{RecordBatch, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    /// One row: 2026-01-01 00:37:00 UTC (New York: 2025-12-31 19:37:00-05).
    async fn context(zone: &str) -> SessionContext {
        let mut state = crate::session_state();
        state.config_mut().options_mut().execution.time_zone = Some(zone.to_string());
        let ctx = SessionContext::new_with_state(state);
        let schema = Arc::new(Schema::new(vec![Field::new(
            "at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        )]));
        let at = TimestampMicrosecondArray::from(vec![1_767_227_820_000_000]).with_timezone("UTC");
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(at)]).unwrap();
        let table = MemTable::try_new(schema, vec![vec![batch]]).unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        ctx
    }

    async fn one(ctx: &SessionContext, sql: &str) -> String {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let column = batches[0].column(0);
        let options = FormatOptions::default();
        let formatter = ArrayFormatter::try_new(column.as_ref(), &options).unwrap();
        let value = formatter.value(0).to_string();
        value
    }

    #[tokio::test]
    async fn zone_dependent_operations_read_the_local_time() {
        let ny = context("America/New_York").await;
        // What PostgreSQL answers with SET TimeZone = 'America/New_York'.
        assert_eq!(
            one(&ny, "SELECT CAST(at AS DATE) FROM t").await,
            "2025-12-31"
        );
        assert_eq!(
            one(&ny, "SELECT CAST(at AS TIMESTAMP) FROM t").await,
            "2025-12-31T19:37:00"
        );
        assert_eq!(one(&ny, "SELECT extract(hour FROM at) FROM t").await, "19");
        assert_eq!(one(&ny, "SELECT extract(day FROM at) FROM t").await, "31");
        // Midnight in New York is 05:00 UTC.
        assert_eq!(
            one(&ny, "SELECT CAST(date_trunc('day', at) AS BIGINT) FROM t").await,
            "1767157200000000"
        );
        // Same instant: comparisons do not change.
        assert_eq!(
            one(
                &ny,
                "SELECT count(*) FROM t WHERE at = TIMESTAMPTZ '2026-01-01 00:37:00+00'"
            )
            .await,
            "1"
        );
        // A timestamp read as timestamptz is New York time: 2026-01-01 05:00 UTC.
        assert_eq!(
            one(
                &ny,
                "SELECT count(*) FROM t WHERE at < CAST(TIMESTAMP '2026-01-01 00:00:00' AS TIMESTAMPTZ)"
            )
            .await,
            "1"
        );
        // Text compared with a UTC column is read in the session's zone: 2026-01-01
        // 00:00 New York is 05:00 UTC, after the row.
        assert_eq!(
            one(
                &ny,
                "SELECT count(*) FROM t WHERE at < '2026-01-01 00:00:00'"
            )
            .await,
            "1"
        );
        let utc = context("UTC").await;
        assert_eq!(
            one(&utc, "SELECT CAST(at AS DATE) FROM t").await,
            "2026-01-01"
        );
        assert_eq!(one(&utc, "SELECT extract(hour FROM at) FROM t").await, "0");
    }

    #[tokio::test]
    async fn a_day_added_across_a_daylight_saving_change_keeps_the_local_time() {
        let ny = context("America/New_York").await;
        // 2026-03-07 12:00 New York (EST) + 1 day = 2026-03-08 12:00 EDT = 16:00 UTC.
        assert_eq!(
            one(
                &ny,
                "SELECT CAST(CAST(arrow_cast(TIMESTAMPTZ '2026-03-07 12:00:00-05', 'Timestamp(Microsecond, Some(\"UTC\"))') + INTERVAL '1 day' AS TIMESTAMP) AS VARCHAR)"
            )
            .await,
            "2026-03-08 12:00:00"
        );
    }
}
