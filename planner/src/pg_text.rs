//! `pg_text`: timestamps cast to text here read as PostgreSQL writes them.
//!
//! Arrow writes a timestamp as ISO 8601 (`2024-01-01T06:30:00+05:30`, `...Z`);
//! PostgreSQL (DateStyle ISO) as `2024-01-01 06:30:00+05:30` and `... 00:37:00+00`.
//! A cast an origin computes is PostgreSQL's already; this rule runs after the
//! federation rule, so it only rewrites casts computed here, into [`PgTimestampText`]
//! — and once before constant folding for casts of constants, which are folded here
//! whatever runs where.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{exec_err, DFSchema, Result};
use datafusion::logical_expr::expr::{Cast, ScalarFunction, TryCast};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// The optimizer rule; see the module documentation.
#[derive(Debug, Default)]
pub struct PgText {
    /// Only casts of constants: the instance that runs before constant folding
    /// (which would fold them with Arrow's cast), before anything is federated.
    pub constants_only: bool,
}

impl OptimizerRule for PgText {
    fn name(&self) -> &str {
        "pg_text"
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        plan.transform_up_with_subqueries(|node| {
            if matches!(node, LogicalPlan::TableScan(_) | LogicalPlan::Extension(_)) {
                return Ok(Transformed::no(node));
            }
            crate::rewrite::map_node_expressions(node, |e, schema| {
                rewrite(e, schema, self.constants_only)
            })
        })
    }
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn rewrite(e: Expr, schema: &DFSchema, constants_only: bool) -> Result<Transformed<Expr>> {
    let (inner, target) = match &e {
        Expr::Cast(Cast { expr, field }) | Expr::TryCast(TryCast { expr, field })
            if is_text(field.data_type()) =>
        {
            (expr, field.data_type().clone())
        }
        _ => return Ok(Transformed::no(e)),
    };
    if !matches!(inner.get_type(schema), Ok(DataType::Timestamp(..))) {
        return Ok(Transformed::no(e));
    }
    if constants_only && !inner.column_refs().is_empty() {
        return Ok(Transformed::no(e));
    }
    let call = Expr::ScalarFunction(ScalarFunction::new_udf(
        Arc::new(ScalarUDF::from(PgTimestampText::new())),
        vec![inner.as_ref().clone()],
    ));
    Ok(Transformed::yes(match target {
        DataType::Utf8 => call,
        other => Expr::Cast(Cast::new(Box::new(call), other)),
    }))
}

/// A timestamp (with or without zone) as PostgreSQL's text output writes it.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PgTimestampText {
    signature: Signature,
}

impl PgTimestampText {
    /// The function.
    pub fn new() -> Self {
        PgTimestampText {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl Default for PgTimestampText {
    fn default() -> Self {
        Self::new()
    }
}

impl ScalarUDFImpl for PgTimestampText {
    fn name(&self) -> &str {
        "switchyard_timestamp_text"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let array = args.args[0].to_array(args.number_rows)?;
        Ok(ColumnarValue::Array(timestamp_text(&array)?))
    }
}

/// Each value of a timestamp array as PostgreSQL writes it (DateStyle ISO).
pub fn timestamp_text(array: &ArrayRef) -> Result<ArrayRef> {
    let DataType::Timestamp(_, zone) = array.data_type() else {
        return exec_err!("timestamp text of {}", array.data_type());
    };
    let zone: Option<datafusion::arrow::array::timezone::Tz> =
        zone.as_ref().map(|z| z.parse()).transpose()?;
    let mut out = StringBuilder::with_capacity(array.len(), array.len() * 26);
    for i in 0..array.len() {
        let Some(utc) = switchyard_functions::instant(array, i)? else {
            out.append_null();
            continue;
        };
        out.append_value(match &zone {
            Some(tz) => {
                use chrono::Offset;
                let local = utc.with_timezone(tz);
                let offset = local.offset().fix().local_minus_utc();
                let (text, era) = naive_text(local.naive_local());
                format!("{text}{}{era}", offset_text(offset))
            }
            None => {
                let (text, era) = naive_text(utc.naive_utc());
                format!("{text}{era}")
            }
        });
    }
    Ok(Arc::new(out.finish()))
}

/// `2024-01-01 06:30:00[.123]` (fraction without trailing zeros), and the era that
/// follows the offset: ` BC` before year 1.
fn naive_text(t: chrono::NaiveDateTime) -> (String, &'static str) {
    use chrono::{Datelike, Timelike};
    let year = t.year();
    let (shown_year, era) = if year <= 0 {
        (1 - year, " BC")
    } else {
        (year, "")
    };
    let mut s = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        shown_year,
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    // PostgreSQL keeps microseconds.
    let micros = t.nanosecond() / 1_000;
    if micros > 0 {
        let fraction = format!("{micros:06}");
        s.push('.');
        s.push_str(fraction.trim_end_matches('0'));
    }
    (s, era)
}

/// `+00`, `+05:30`, `-03:30`, as PostgreSQL writes an offset.
fn offset_text(seconds: i32) -> String {
    let sign = if seconds < 0 { '-' } else { '+' };
    let s = seconds.abs();
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    match (m, sec) {
        (0, 0) => format!("{sign}{h:02}"),
        (m, 0) => format!("{sign}{h:02}:{m:02}"),
        (m, sec) => format!("{sign}{h:02}:{m:02}:{sec:02}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{StringArray, TimestampMicrosecondArray};

    fn text(values: Vec<i64>, zone: Option<&str>) -> Vec<String> {
        let mut a = TimestampMicrosecondArray::from(values);
        if let Some(z) = zone {
            a = a.with_timezone(z);
        }
        let array: ArrayRef = Arc::new(a);
        let out = timestamp_text(&array).unwrap();
        let out = out.as_any().downcast_ref::<StringArray>().unwrap();
        out.iter().map(|v| v.unwrap().to_string()).collect()
    }

    #[test]
    fn timestamps_are_written_as_postgresql_writes_them() {
        // 2026-01-01 00:37:00 UTC, and with 120 µs.
        let at = 1_767_227_820_000_000;
        assert_eq!(
            text(vec![at, at + 120], Some("UTC")),
            ["2026-01-01 00:37:00+00", "2026-01-01 00:37:00.00012+00"]
        );
        assert_eq!(
            text(vec![at], Some("Asia/Kolkata")),
            ["2026-01-01 06:07:00+05:30"]
        );
        assert_eq!(
            text(vec![at], Some("America/New_York")),
            ["2025-12-31 19:37:00-05"]
        );
        assert_eq!(text(vec![at], None), ["2026-01-01 00:37:00"]);
        // 0045-03-15 12:00:00 BC (astronomical year -44).
        assert_eq!(
            text(vec![-63_549_316_800_000_000], Some("UTC")),
            ["0045-03-15 12:00:00+00 BC"]
        );
    }
}
