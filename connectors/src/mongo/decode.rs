//! Documents to Arrow: each output column is read from one field path and must hold
//! a value of the column's type.
//!
//! The rule for a value of the wrong type (a string where the column is `int8`, a
//! fraction where it is an integer): the statement fails with SQLSTATE 42804 naming
//! the column, the document's `_id` and what was found — never a silent NULL. A
//! missing field, `null` and `undefined` are NULL. Declare the column `jsonb` to read
//! mixed values as JSON.

use std::str::FromStr;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder,
    Int64Builder, ListArray, StringBuilder, TimestampNanosecondBuilder,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use mongodb::bson::{Bson, Decimal128, Document};

use crate::ConnectorError;

/// How one output column is read.
#[derive(Debug, Clone)]
pub struct Target {
    /// Field path in the result documents.
    pub path: String,
    /// Whether the column holds JSON text of any value.
    pub json: bool,
}

/// Reads `docs` into a batch of `schema`, column `i` from `targets[i]`.
pub fn batch(
    origin: &str,
    docs: &[Document],
    schema: &SchemaRef,
    targets: &[Target],
) -> Result<RecordBatch, ConnectorError> {
    let mut columns = Vec::with_capacity(targets.len());
    for (field, target) in schema.fields().iter().zip(targets) {
        let values: Vec<Option<&Bson>> = docs.iter().map(|d| lookup(d, &target.path)).collect();
        let ctx = Ctx {
            origin,
            column: field.name(),
            docs,
        };
        columns.push(array(&ctx, &values, field.data_type(), target.json)?);
    }
    RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(docs.len())),
    )
    .map_err(|e| ConnectorError::DataFusion(e.into()))
}

/// The value at a dotted path; `None` when any step is missing or not a document.
pub fn lookup<'a>(doc: &'a Document, path: &str) -> Option<&'a Bson> {
    let mut parts = path.split('.');
    let mut value = doc.get(parts.next()?)?;
    for part in parts {
        match value {
            Bson::Document(d) => value = d.get(part)?,
            _ => return None,
        }
    }
    match value {
        Bson::Null | Bson::Undefined => None,
        v => Some(v),
    }
}

struct Ctx<'a> {
    origin: &'a str,
    column: &'a str,
    docs: &'a [Document],
}

impl Ctx<'_> {
    fn wrong(&self, row: usize, expected: &DataType, found: &Bson) -> ConnectorError {
        let id = self
            .docs
            .get(row)
            .and_then(|d| d.get("_id"))
            .map(|id| format!(" (document _id {id})"))
            .unwrap_or_default();
        ConnectorError::WrongType {
            origin: self.origin.to_string(),
            column: self.column.to_string(),
            message: format!(
                "expected {}, found {} {found}{id}",
                sql_name(expected),
                kind_name(found)
            ),
        }
    }
}

fn sql_name(t: &DataType) -> String {
    match t {
        DataType::Int16 => "int2".into(),
        DataType::Int32 => "int4".into(),
        DataType::Int64 => "int8".into(),
        DataType::Float32 => "float4".into(),
        DataType::Float64 => "float8".into(),
        DataType::Decimal128(p, s) => format!("numeric({p},{s})"),
        DataType::Utf8 => "text".into(),
        DataType::Boolean => "bool".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::List(f) => format!("{}[]", sql_name(f.data_type())),
        other => other.to_string(),
    }
}

fn kind_name(v: &Bson) -> &'static str {
    match v {
        Bson::Double(_) => "double",
        Bson::String(_) => "string",
        Bson::Array(_) => "array",
        Bson::Document(_) => "document",
        Bson::Boolean(_) => "bool",
        Bson::Int32(_) => "int",
        Bson::Int64(_) => "long",
        Bson::Decimal128(_) => "decimal",
        Bson::DateTime(_) => "date",
        Bson::ObjectId(_) => "objectId",
        _ => "value",
    }
}

fn array(
    ctx: &Ctx<'_>,
    values: &[Option<&Bson>],
    data_type: &DataType,
    json: bool,
) -> Result<ArrayRef, ConnectorError> {
    let cast = |a: ArrayRef| -> Result<ArrayRef, ConnectorError> {
        if a.data_type() == data_type {
            return Ok(a);
        }
        arrow::compute::cast(&a, data_type).map_err(|e| ConnectorError::DataFusion(e.into()))
    };
    Ok(match data_type {
        DataType::Int16 | DataType::Int32 | DataType::Int64 => {
            let mut b = Int64Builder::with_capacity(values.len());
            for (row, v) in values.iter().enumerate() {
                let n = match v {
                    None => None,
                    Some(v) => Some(to_i64(v).ok_or_else(|| ctx.wrong(row, data_type, v))?),
                };
                let fits = match (n, data_type) {
                    (Some(n), DataType::Int16) => i16::try_from(n).is_ok(),
                    (Some(n), DataType::Int32) => i32::try_from(n).is_ok(),
                    _ => true,
                };
                if !fits {
                    return Err(ctx.wrong(row, data_type, v.expect("some")));
                }
                b.append_option(n);
            }
            cast(Arc::new(b.finish()))?
        }
        DataType::Float32 | DataType::Float64 => {
            let mut b = Float64Builder::with_capacity(values.len());
            for (row, v) in values.iter().enumerate() {
                b.append_option(match v {
                    None => None,
                    Some(v) => Some(to_f64(v).ok_or_else(|| ctx.wrong(row, data_type, v))?),
                });
            }
            cast(Arc::new(b.finish()))?
        }
        DataType::Decimal128(p, s) => {
            let mut b = Decimal128Builder::with_capacity(values.len());
            for (row, v) in values.iter().enumerate() {
                b.append_option(match v {
                    None => None,
                    Some(v) => {
                        Some(to_decimal(v, *p, *s).ok_or_else(|| ctx.wrong(row, data_type, v))?)
                    }
                });
            }
            Arc::new(
                b.finish()
                    .with_precision_and_scale(*p, *s)
                    .map_err(|e| ConnectorError::DataFusion(e.into()))?,
            )
        }
        DataType::Utf8 => {
            let mut b = StringBuilder::with_capacity(values.len(), values.len() * 16);
            for (row, v) in values.iter().enumerate() {
                match v {
                    None => b.append_null(),
                    Some(v) if json => b.append_value(to_json(v)),
                    Some(Bson::String(s)) | Some(Bson::Symbol(s)) => b.append_value(s),
                    Some(Bson::ObjectId(o)) => b.append_value(o.to_hex()),
                    Some(v) => return Err(ctx.wrong(row, data_type, v)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Boolean => {
            let mut b = BooleanBuilder::with_capacity(values.len());
            for (row, v) in values.iter().enumerate() {
                match v {
                    None => b.append_null(),
                    Some(Bson::Boolean(x)) => b.append_value(*x),
                    Some(v) => return Err(ctx.wrong(row, data_type, v)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Date32 => {
            let mut b = Date32Builder::with_capacity(values.len());
            for (row, v) in values.iter().enumerate() {
                match v {
                    None => b.append_null(),
                    Some(Bson::DateTime(d)) => {
                        b.append_value(d.timestamp_millis().div_euclid(86_400_000) as i32)
                    }
                    Some(v) => return Err(ctx.wrong(row, data_type, v)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Timestamp(_, tz) => {
            let mut b = TimestampNanosecondBuilder::with_capacity(values.len());
            for (row, v) in values.iter().enumerate() {
                match v {
                    None => b.append_null(),
                    Some(Bson::DateTime(d)) => {
                        let ns = d.timestamp_millis().checked_mul(1_000_000);
                        b.append_option(ns);
                    }
                    Some(v) => return Err(ctx.wrong(row, data_type, v)),
                }
            }
            cast(Arc::new(b.finish().with_timezone_opt(tz.clone())))?
        }
        DataType::List(item) => {
            let mut offsets = Vec::with_capacity(values.len() + 1);
            offsets.push(0i32);
            let mut items: Vec<Option<&Bson>> = Vec::new();
            let mut nulls = Vec::with_capacity(values.len());
            for (row, v) in values.iter().enumerate() {
                match v {
                    None => nulls.push(false),
                    Some(Bson::Array(a)) => {
                        nulls.push(true);
                        items.extend(a.iter().map(|x| match x {
                            Bson::Null | Bson::Undefined => None,
                            x => Some(x),
                        }));
                    }
                    Some(v) => return Err(ctx.wrong(row, data_type, v)),
                }
                offsets.push(items.len() as i32);
            }
            let inner = array(ctx, &items, item.data_type(), false)?;
            Arc::new(
                ListArray::try_new(
                    Arc::new(Field::new("item", item.data_type().clone(), true)),
                    OffsetBuffer::new(offsets.into()),
                    inner,
                    Some(nulls.into()),
                )
                .map_err(|e| ConnectorError::DataFusion(e.into()))?,
            )
        }
        other => {
            return Err(ConnectorError::UnsupportedType {
                origin: ctx.origin.to_string(),
                column: ctx.column.to_string(),
                type_name: other.to_string(),
            })
        }
    })
}

fn to_i64(v: &Bson) -> Option<i64> {
    match v {
        Bson::Int32(n) => Some(*n as i64),
        Bson::Int64(n) => Some(*n),
        Bson::Double(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Some(*f as i64),
        Bson::Decimal128(d) => {
            // Only a whole number reads as an integer.
            let (digits, scale) = parse_decimal(&d.to_string())?;
            let unit = 10i128.checked_pow(scale as u32)?;
            (digits % unit == 0)
                .then(|| i64::try_from(digits / unit).ok())
                .flatten()
        }
        _ => None,
    }
}

fn to_f64(v: &Bson) -> Option<f64> {
    match v {
        Bson::Int32(n) => Some(*n as f64),
        Bson::Int64(n) => Some(*n as f64),
        Bson::Double(f) => Some(*f),
        Bson::Decimal128(d) => d.to_string().parse().ok(),
        _ => None,
    }
}

fn to_decimal(v: &Bson, precision: u8, scale: i8) -> Option<i128> {
    let (m, s) = match v {
        Bson::Int32(n) => (*n as i128, 0),
        Bson::Int64(n) => (*n as i128, 0),
        Bson::Decimal128(d) => parse_decimal(&d.to_string())?,
        _ => return None,
    };
    let value = rescale(m, s, scale as i32)?;
    (value.unsigned_abs() < 10u128.checked_pow(precision as u32)?).then_some(value)
}

fn to_json(v: &Bson) -> String {
    v.clone().into_relaxed_extjson().to_string()
}

/// A decimal's text (`-1.25`, `3E+2`, `1.5E-7`) as digits and scale.
pub fn parse_decimal(text: &str) -> Option<(i128, i32)> {
    let (mantissa, exp) = match text.split_once(['E', 'e']) {
        Some((m, e)) => (m, e.trim_start_matches('+').parse::<i32>().ok()?),
        None => (text, 0),
    };
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let mut digits: i128 = 0;
    for c in int.chars().chain(frac.chars()) {
        let d = c.to_digit(10)? as i128;
        digits = digits.checked_mul(10)?.checked_add(d)?;
    }
    let mut scale = frac.len() as i32 - exp;
    if scale < 0 {
        digits = digits.checked_mul(10i128.checked_pow((-scale) as u32)?)?;
        scale = 0;
    }
    Some((if negative { -digits } else { digits }, scale))
}

/// `digits × 10^-from` as digits at scale `to`, rounding half away from zero (as
/// PostgreSQL rounds numerics).
pub fn rescale(digits: i128, from: i32, to: i32) -> Option<i128> {
    if to >= from {
        return digits.checked_mul(10i128.checked_pow((to - from) as u32)?);
    }
    let div = 10i128.checked_pow((from - to) as u32)?;
    let q = digits / div;
    let r = digits % div;
    Some(if r.abs() * 2 >= div {
        q + digits.signum()
    } else {
        q
    })
}

/// A Decimal128 holding `digits × 10^-scale` exactly.
pub fn decimal128(digits: i128, scale: i8) -> Option<Decimal128> {
    let negative = digits < 0;
    let abs = digits.unsigned_abs().to_string();
    let scale = scale as usize;
    let text = if scale == 0 {
        abs
    } else if abs.len() > scale {
        format!(
            "{}.{}",
            &abs[..abs.len() - scale],
            &abs[abs.len() - scale..]
        )
    } else {
        format!("0.{}{}", "0".repeat(scale - abs.len()), abs)
    };
    let text = if negative { format!("-{text}") } else { text };
    Decimal128::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Decimal128Array};
    use arrow::datatypes::{Int32Type, Schema};
    use mongodb::bson::doc;

    #[test]
    fn decimals_round_trip_and_round_half_away() {
        assert_eq!(parse_decimal("-1.25"), Some((-125, 2)));
        assert_eq!(parse_decimal("3E+2"), Some((300, 0)));
        assert_eq!(parse_decimal("1.5E-7"), Some((15, 8)));
        assert_eq!(rescale(125, 2, 1), Some(13));
        assert_eq!(rescale(-125, 2, 1), Some(-13));
        assert_eq!(rescale(124, 2, 1), Some(12));
        assert_eq!(decimal128(-5, 3).unwrap().to_string(), "-0.005");
        assert_eq!(decimal128(12345, 2).unwrap().to_string(), "123.45");
    }

    #[test]
    fn reads_typed_columns_and_refuses_wrong_types() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int32, true),
            Field::new("price", DataType::Decimal128(10, 2), true),
            Field::new("city", DataType::Utf8, true),
        ]));
        let targets = vec![
            Target {
                path: "n".into(),
                json: false,
            },
            Target {
                path: "price".into(),
                json: false,
            },
            Target {
                path: "addr.city".into(),
                json: false,
            },
        ];
        let docs = vec![
            doc! {"n": 1_i32, "price": Decimal128::from_str("9.99").unwrap(), "addr": {"city": "Oslo"}},
            doc! {"n": 2_i64, "price": 3_i32, "addr": "flat"},
            doc! {"price": Bson::Null},
        ];
        let b = batch("m", &docs, &schema, &targets).unwrap();
        let n = b.column(0).as_primitive::<Int32Type>();
        assert_eq!((n.value(0), n.value(1), n.is_null(2)), (1, 2, true));
        let p = b
            .column(1)
            .as_any()
            .downcast_ref::<Decimal128Array>()
            .unwrap();
        assert_eq!((p.value(0), p.value(1), p.is_null(2)), (999, 300, true));
        let c = b.column(2).as_string::<i32>();
        assert_eq!((c.value(0), c.is_null(1)), ("Oslo", true));

        let bad = vec![doc! {"_id": 7_i32, "n": "seven"}];
        let err = batch("m", &bad, &schema, &targets).unwrap_err();
        assert_eq!(err.sqlstate().code(), "42804");
        assert!(
            err.to_string()
                .contains("expected int4, found string \"seven\" (document _id 7)"),
            "{err}"
        );
        let frac = vec![doc! {"n": 1.5}];
        assert!(batch("m", &frac, &schema, &targets).is_err());
        let dec = |t: &str| Bson::Decimal128(Decimal128::from_str(t).unwrap());
        assert_eq!(to_i64(&dec("12.00")), Some(12));
        assert_eq!(to_i64(&dec("-3E+2")), Some(-300));
        assert_eq!(to_i64(&dec("12.50")), None);
    }
}
