//! `datetime_input`: timestamp and date literals in the forms PostgreSQL reads.
//!
//! Arrow's parser, which folds `timestamptz '...'` and `'...'` compared with a
//! timestamp column, wants seconds and a full offset; PostgreSQL also reads
//! `2024-01-03 00:00`, `2024-01-03 10:30:00+02`, `... UTC` and `epoch`. This rule runs
//! before constant folding and rewrites such text into the one form Arrow reads
//! (`2024-01-03T00:00:00+02:00`); text in neither form is left for Arrow to refuse.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::expr::{Cast, TryCast};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// The optimizer rule; see the module documentation.
#[derive(Debug, Default)]
pub struct DatetimeInput;

impl OptimizerRule for DatetimeInput {
    fn name(&self) -> &str {
        "datetime_input"
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
            crate::rewrite::map_node_expressions(node, |e, _| Ok(normalize(e)))
        })
    }
}

fn normalize(e: Expr) -> Transformed<Expr> {
    let (inner, target) = match &e {
        Expr::Cast(Cast { expr, field }) | Expr::TryCast(TryCast { expr, field }) => {
            (expr.as_ref(), field.data_type())
        }
        _ => return Transformed::no(e),
    };
    let Expr::Literal(ScalarValue::Utf8(Some(text)), meta) = inner else {
        return Transformed::no(e);
    };
    let zoned = match target {
        DataType::Timestamp(_, zone) => zone.is_some(),
        DataType::Date32 | DataType::Date64 => false,
        _ => return Transformed::no(e),
    };
    let Some(fixed) = iso(text, zoned) else {
        return Transformed::no(e);
    };
    if &fixed == text {
        return Transformed::no(e);
    }
    let literal = Box::new(Expr::Literal(ScalarValue::Utf8(Some(fixed)), meta.clone()));
    Transformed::yes(match e {
        Expr::Cast(Cast { field, .. }) => Expr::Cast(Cast {
            expr: literal,
            field,
        }),
        Expr::TryCast(TryCast { field, .. }) => Expr::TryCast(TryCast {
            expr: literal,
            field,
        }),
        other => other,
    })
}

/// `text` in Arrow's form, if PostgreSQL reads it as an ISO date or timestamp:
/// `YYYY-MM-DD[( |T)HH:MM[:SS[.fff]]][ ][Z|UTC|GMT|±HH[[:]MM]]`, or `epoch`.
pub fn iso(text: &str, zoned: bool) -> Option<String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("epoch") {
        return Some(if zoned {
            "1970-01-01T00:00:00+00:00".into()
        } else {
            "1970-01-01T00:00:00".into()
        });
    }
    let b = t.as_bytes();
    let digits = |from: usize, n: usize| {
        b.get(from..from + n)
            .is_some_and(|s| s.iter().all(u8::is_ascii_digit))
    };
    // The date.
    if !(digits(0, 4)
        && b.get(4) == Some(&b'-')
        && digits(5, 2)
        && b.get(7) == Some(&b'-')
        && digits(8, 2))
    {
        return None;
    }
    let date = &t[..10];
    let rest = &t[10..];
    if rest.is_empty() {
        return Some(date.to_string());
    }
    let rest = rest.strip_prefix([' ', 'T', 't'])?.trim_start();
    // The time: HH:MM[:SS[.fff]].
    let rb = rest.as_bytes();
    let d2 = |from: usize| {
        rb.get(from..from + 2)
            .is_some_and(|s| s.iter().all(u8::is_ascii_digit))
    };
    if !(d2(0) && rb.get(2) == Some(&b':') && d2(3)) {
        return None;
    }
    let mut end = 5;
    let mut time = rest[..5].to_string();
    if rb.get(5) == Some(&b':') && d2(6) {
        time.push_str(&rest[5..8]);
        end = 8;
        if rb.get(8) == Some(&b'.') {
            let frac_len = rb[9..].iter().take_while(|c| c.is_ascii_digit()).count();
            if frac_len == 0 {
                return None;
            }
            time.push_str(&rest[8..9 + frac_len]);
            end = 9 + frac_len;
        }
    } else {
        time.push_str(":00");
    }
    let zone = rest[end..].trim();
    let offset = if zone.is_empty() {
        String::new()
    } else if ["z", "utc", "gmt", "+00", "-00"]
        .iter()
        .any(|z| zone.eq_ignore_ascii_case(z))
    {
        "+00:00".into()
    } else {
        let (sign, digits) = zone.split_at(1);
        if sign != "+" && sign != "-" {
            return None;
        }
        let digits: String = digits.chars().filter(|c| *c != ':').collect();
        if !digits.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        match digits.len() {
            1 => format!("{sign}0{digits}:00"),
            2 => format!("{sign}{digits}:00"),
            4 => format!("{sign}{}:{}", &digits[..2], &digits[2..]),
            _ => return None,
        }
    };
    Some(format!("{date}T{time}{offset}"))
}

#[cfg(test)]
mod tests {
    use super::iso;

    #[test]
    fn postgresql_forms_become_arrows() {
        assert_eq!(
            iso("2024-01-03 00:00", true).unwrap(),
            "2024-01-03T00:00:00"
        );
        assert_eq!(
            iso("2024-01-03 10:30:00.25+02", true).unwrap(),
            "2024-01-03T10:30:00.25+02:00"
        );
        assert_eq!(
            iso("2024-01-03 10:30 -0530", true).unwrap(),
            "2024-01-03T10:30:00-05:30"
        );
        assert_eq!(
            iso("2024-01-03T10:30:00Z", true).unwrap(),
            "2024-01-03T10:30:00+00:00"
        );
        assert_eq!(
            iso("2024-01-03 10:30:00 UTC", true).unwrap(),
            "2024-01-03T10:30:00+00:00"
        );
        assert_eq!(iso("2024-01-03", false).unwrap(), "2024-01-03");
        assert_eq!(iso("epoch", false).unwrap(), "1970-01-01T00:00:00");
        assert_eq!(iso("Jan 3 2024", false), None);
        assert_eq!(iso("2024-01-03 10:30:00 Europe/Paris", true), None);
    }
}
