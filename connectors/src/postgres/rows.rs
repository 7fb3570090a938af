//! PostgreSQL rows in binary format to Arrow arrays: rows tokio-postgres received
//! for a query, and the tuples of a logical replication stream ([`RawRows`]).
//!
//! Each column is decoded by its PostgreSQL type into the Arrow type
//! [`super::postgres::arrow_type`] gives it; arrays keep their NULL elements
//! (`{1,NULL,3}`), numeric is rounded to the planned scale as PostgreSQL rounds
//! (half away from zero), uuid and jsonb arrive as their text.

use std::error::Error;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};
use datafusion::arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array,
    Int16Array, Int32Array, Int64Array, IntervalMonthDayNanoArray, ListArray, StringArray,
    Time64NanosecondArray, TimestampNanosecondArray, UInt32Array,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::datatypes::{DataType, Field, IntervalMonthDayNano};
use datafusion::error::{DataFusionError, Result};
use tokio_postgres::types::{FromSql, Kind, Type};
use tokio_postgres::Row;

/// Rows whose cells hold PostgreSQL binary values (`None`: SQL NULL).
pub trait RawRows {
    /// Number of rows.
    fn row_count(&self) -> usize;
    /// Cell `col` of row `row`.
    fn cell(&self, row: usize, col: usize) -> Result<Option<&[u8]>>;
    /// Column `col`'s name, for errors.
    fn column_name(&self, col: usize) -> &str;
}

impl RawRows for [Row] {
    fn row_count(&self) -> usize {
        self.len()
    }

    fn cell(&self, row: usize, col: usize) -> Result<Option<&[u8]>> {
        self[row]
            .try_get::<_, Option<Raw<'_>>>(col)
            .map(|raw| raw.map(|r| r.0))
            .map_err(|e| read_error(self.column_name(col), &e))
    }

    fn column_name(&self, col: usize) -> &str {
        self.first()
            .and_then(|r| r.columns().get(col))
            .map(|c| c.name())
            .unwrap_or("?")
    }
}

/// A cell's bytes as sent, whatever its type.
struct Raw<'a>(&'a [u8]);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(Raw(raw))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

fn read_error(column: &str, e: &(dyn Error + 'static)) -> DataFusionError {
    DataFusionError::Execution(format!(
        "cannot read column {column} from the origin: {}",
        e.source().map(|s| s.to_string()).unwrap_or(e.to_string())
    ))
}

/// Column `i` of `rows` (PostgreSQL type `pg`) as an array close to `target`: the
/// caller casts it to `target` where the origin's type differs from the plan's.
pub fn column<R: RawRows + ?Sized>(
    rows: &R,
    i: usize,
    pg: &Type,
    target: &DataType,
) -> Result<ArrayRef> {
    match pg.kind() {
        Kind::Array(element) => {
            let element_target = match target {
                DataType::List(f) => f.data_type().clone(),
                other => other.clone(),
            };
            let (values, shape) = read_values(rows, i, pg, element, &element_target, true)?;
            let shape = shape.expect("lists have a shape");
            let field = Arc::new(Field::new("item", values.data_type().clone(), true));
            let list = ListArray::try_new(
                field,
                OffsetBuffer::from_lengths(shape.lengths),
                values,
                Some(NullBuffer::from(shape.valid)),
            )?;
            Ok(Arc::new(list))
        }
        _ => Ok(read_values(rows, i, pg, pg, target, false)?.0),
    }
}

/// Lengths and validity of each row's array.
struct Shape {
    lengths: Vec<usize>,
    valid: Vec<bool>,
}

/// Every value of column `i` (of type `column_type`), flattened when the column
/// holds arrays.
fn read<'a, T: FromSql<'a>, R: RawRows + ?Sized>(
    rows: &'a R,
    i: usize,
    column_type: &Type,
    list: bool,
) -> Result<(Vec<Option<T>>, Option<Shape>)> {
    let failed = |e: Box<dyn Error + Sync + Send>| read_error(rows.column_name(i), e.as_ref());
    let count = rows.row_count();
    if !list {
        let mut values = Vec::with_capacity(count);
        for row in 0..count {
            let raw = rows.cell(row, i)?;
            values.push(Option::<T>::from_sql_nullable(column_type, raw).map_err(failed)?);
        }
        return Ok((values, None));
    }
    let mut values = Vec::new();
    let mut shape = Shape {
        lengths: Vec::with_capacity(count),
        valid: Vec::with_capacity(count),
    };
    for row in 0..count {
        let raw = rows.cell(row, i)?;
        let array: Option<Vec<Option<T>>> =
            FromSql::from_sql_nullable(column_type, raw).map_err(failed)?;
        shape.valid.push(array.is_some());
        let array = array.unwrap_or_default();
        shape.lengths.push(array.len());
        values.extend(array);
    }
    Ok((values, Some(shape)))
}

fn read_values<R: RawRows + ?Sized>(
    rows: &R,
    i: usize,
    column_type: &Type,
    pg: &Type,
    target: &DataType,
    list: bool,
) -> Result<(ArrayRef, Option<Shape>)> {
    macro_rules! plain {
        ($rust:ty, $array:ty) => {{
            let (v, shape) = read::<$rust, R>(rows, i, column_type, list)?;
            (Arc::new(<$array>::from(v)) as ArrayRef, shape)
        }};
        ($rust:ty, $array:ty, $map:expr) => {{
            let (v, shape) = read::<$rust, R>(rows, i, column_type, list)?;
            let v: Vec<_> = v.into_iter().map(|x| x.map($map)).collect();
            (Arc::new(<$array>::from(v)) as ArrayRef, shape)
        }};
    }
    Ok(match *pg {
        Type::BOOL => plain!(bool, BooleanArray),
        Type::INT2 => plain!(i16, Int16Array),
        Type::INT4 => plain!(i32, Int32Array),
        Type::INT8 => plain!(i64, Int64Array),
        Type::OID => plain!(u32, UInt32Array),
        Type::FLOAT4 => plain!(f32, Float32Array),
        Type::FLOAT8 => plain!(f64, Float64Array),
        Type::BYTEA => plain!(&[u8], BinaryArray),
        Type::DATE => plain!(NaiveDate, Date32Array, |d: NaiveDate| {
            (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32
        }),
        Type::TIME => plain!(NaiveTime, Time64NanosecondArray, |t: NaiveTime| {
            t.num_seconds_from_midnight() as i64 * 1_000_000_000 + t.nanosecond() as i64
        }),
        Type::TIMESTAMP => {
            let (v, shape) = read::<NaiveDateTime, R>(rows, i, column_type, list)?;
            let v = v
                .into_iter()
                .map(|x| x.map(|t| nanos(t.and_utc())).transpose())
                .collect::<Result<Vec<_>>>()?;
            (
                Arc::new(TimestampNanosecondArray::from(v)) as ArrayRef,
                shape,
            )
        }
        Type::TIMESTAMPTZ => {
            let (v, shape) = read::<DateTime<Utc>, R>(rows, i, column_type, list)?;
            let v = v
                .into_iter()
                .map(|x| x.map(nanos).transpose())
                .collect::<Result<Vec<_>>>()?;
            let array = TimestampNanosecondArray::from(v).with_timezone("UTC");
            (Arc::new(array) as ArrayRef, shape)
        }
        Type::INTERVAL => plain!(Interval, IntervalMonthDayNanoArray, |v: Interval| {
            IntervalMonthDayNano::new(v.months, v.days, v.micros * 1000)
        }),
        Type::NUMERIC => {
            let (precision, scale) = match target {
                DataType::Decimal128(p, s) => (*p, *s),
                _ => (38, 10),
            };
            let (v, shape) = read::<Numeric, R>(rows, i, column_type, list)?;
            let v = v
                .into_iter()
                .map(|x| x.map(|n| n.to_i128(scale)).transpose())
                .collect::<Result<Vec<_>>>()?;
            let array = Decimal128Array::from(v).with_precision_and_scale(precision, scale)?;
            (Arc::new(array) as ArrayRef, shape)
        }
        // text, varchar, char(n), name, uuid, json, jsonb and any other type read as text.
        _ => {
            let (v, shape) = read::<Text, R>(rows, i, column_type, list)?;
            let v: Vec<Option<String>> = v.into_iter().map(|x| x.map(|t| t.0)).collect();
            (Arc::new(StringArray::from(v)) as ArrayRef, shape)
        }
    })
}

fn nanos(t: DateTime<Utc>) -> Result<i64> {
    t.timestamp_nanos_opt().ok_or_else(|| {
        DataFusionError::Execution(format!(
            "timestamp {t} is outside the range Switchyard carries (1677-09-21 to 2262-04-11)"
        ))
    })
}

/// A value's text: text types as sent, uuid from its 16 bytes, jsonb without its
/// version byte.
struct Text(String);

impl<'a> FromSql<'a> for Text {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn Error + Sync + Send>> {
        match *ty {
            Type::UUID => Ok(Text(uuid_text(raw).ok_or("uuid is not 16 bytes")?)),
            Type::JSONB => match raw.split_first() {
                Some((1, rest)) => Ok(Text(std::str::from_utf8(rest)?.to_string())),
                _ => Err("unsupported jsonb version".into()),
            },
            _ => Ok(Text(std::str::from_utf8(raw)?.to_string())),
        }
    }

    fn accepts(ty: &Type) -> bool {
        !matches!(ty.kind(), Kind::Array(_))
    }
}

/// A uuid's text (`a0eebc99-9c0b-...`) from its 16 bytes.
pub fn uuid_text(bytes: &[u8]) -> Option<String> {
    uuid::Uuid::from_slice(bytes)
        .ok()
        .map(|u| u.hyphenated().to_string())
}

/// An interval as PostgreSQL sends it.
struct Interval {
    months: i32,
    days: i32,
    micros: i64,
}

impl<'a> FromSql<'a> for Interval {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn Error + Sync + Send>> {
        if raw.len() != 16 {
            return Err("interval is not 16 bytes".into());
        }
        Ok(Interval {
            micros: i64::from_be_bytes(raw[0..8].try_into()?),
            days: i32::from_be_bytes(raw[8..12].try_into()?),
            months: i32::from_be_bytes(raw[12..16].try_into()?),
        })
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
}

/// A numeric as PostgreSQL sends it: base-10000 digits, the weight of the first.
struct Numeric {
    negative: bool,
    special: Option<&'static str>,
    weight: i16,
    digits: Vec<i16>,
}

impl<'a> FromSql<'a> for Numeric {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn Error + Sync + Send>> {
        let word = |at: usize| -> std::result::Result<i16, Box<dyn Error + Sync + Send>> {
            Ok(i16::from_be_bytes(
                raw.get(at..at + 2)
                    .ok_or("numeric is truncated")?
                    .try_into()?,
            ))
        };
        let count = word(0)?.max(0) as usize;
        let sign = word(4)? as u16;
        let digits = (0..count)
            .map(|k| word(8 + 2 * k))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Numeric {
            negative: sign == 0x4000,
            special: match sign {
                0xC000 => Some("NaN"),
                0xD000 => Some("Infinity"),
                0xF000 => Some("-Infinity"),
                _ => None,
            },
            weight: word(2)?,
            digits,
        })
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

impl Numeric {
    /// The value times 10^scale, rounded half away from zero.
    fn to_i128(&self, scale: i8) -> Result<i128> {
        let out_of_range = || {
            DataFusionError::Execution(format!(
                "numeric value {} does not fit the planned type (scale {scale}, 38 digits)",
                self.special.unwrap_or("from the origin")
            ))
        };
        if self.special.is_some() {
            return Err(out_of_range());
        }
        let scale = scale as i32;
        let weight = self.weight as i32;
        // Digits below 10^-(scale + 1) cannot change the rounded value.
        let keep = (weight + 1 + (scale + 4) / 4 + 1).max(0) as usize;
        let digits = &self.digits[..self.digits.len().min(keep)];
        if digits.is_empty() {
            return Ok(0);
        }
        let mut acc: i128 = 0;
        for d in digits {
            acc = acc
                .checked_mul(10_000)
                .and_then(|a| a.checked_add(*d as i128))
                .ok_or_else(out_of_range)?;
        }
        // acc holds the value times 10^places.
        let places = 4 * (digits.len() as i32 - 1 - weight);
        let shift = scale - places;
        let value = if shift >= 0 {
            10i128
                .checked_pow(shift as u32)
                .and_then(|p| acc.checked_mul(p))
                .ok_or_else(out_of_range)?
        } else {
            match 10i128.checked_pow((-shift) as u32) {
                Some(p) => {
                    let (q, r) = (acc / p, acc % p);
                    if r * 2 >= p {
                        q + 1
                    } else {
                        q
                    }
                }
                None => 0,
            }
        };
        Ok(if self.negative { -value } else { value })
    }
}

#[cfg(test)]
mod tests {
    use super::Numeric;

    fn n(negative: bool, weight: i16, digits: &[i16]) -> Numeric {
        Numeric {
            negative,
            special: None,
            weight,
            digits: digits.to_vec(),
        }
    }

    #[test]
    fn numeric_scales_and_rounds_like_postgres() {
        // 12345.678 = [1, 2345, 6780], weight 1
        assert_eq!(
            n(false, 1, &[1, 2345, 6780]).to_i128(3).unwrap(),
            12_345_678
        );
        assert_eq!(n(false, 1, &[1, 2345, 6780]).to_i128(2).unwrap(), 1_234_568);
        assert_eq!(n(true, 1, &[1, 2345, 6750]).to_i128(2).unwrap(), -1_234_568);
        assert_eq!(n(false, 1, &[1, 2345, 6780]).to_i128(0).unwrap(), 12_346);
        // 1e8 = [1], weight 2 (trailing zero groups are not sent)
        assert_eq!(n(false, 2, &[1]).to_i128(2).unwrap(), 10_000_000_000);
        // 0.0005 = [5], weight -1
        assert_eq!(n(false, -1, &[5]).to_i128(3).unwrap(), 1);
        assert_eq!(n(false, -1, &[5]).to_i128(4).unwrap(), 5);
        assert_eq!(n(false, 0, &[]).to_i128(4).unwrap(), 0);
        // Far more fraction digits than the scale keeps.
        let third: Vec<i16> = std::iter::repeat_n(3333, 40).collect();
        assert_eq!(n(false, -1, &third).to_i128(10).unwrap(), 3_333_333_333);
        assert!(n(false, 20, &[1]).to_i128(2).is_err());
    }
}
