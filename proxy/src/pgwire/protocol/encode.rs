//! Arrow batches to PostgreSQL rows: each column's wire type, and its values as
//! PostgreSQL writes them.
//!
//! arrow-pg encodes most values. This module decides the wire type of a column
//! (a connector's [`PG_TYPE_KEY`] names uuid, json and jsonb, which Arrow stores as
//! text) and writes the values where arrow-pg's form differs from PostgreSQL's:
//! a NULL interval (arrow-pg writes the slot's zero), interval and float text
//! (`04:05:06.5`, `156`, `1e+20`, `Infinity`), timestamp and time text (fractions
//! without trailing zeros, timestamptz in the session's zone), uuid and jsonb in
//! binary format.

use std::collections::HashMap;
use std::error::Error;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use datafusion::arrow::array::timezone::Tz;
use datafusion::arrow::array::{
    Array, AsArray, IntervalDayTimeArray, IntervalMonthDayNanoArray, IntervalYearMonthArray,
    RecordBatch,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, IntervalUnit, Schema};
use datafusion::dataframe::DataFrame;
use datafusion::execution::SendableRecordBatchStream;
use datafusion_postgres::arrow_pg::datatypes::field_into_pg_type;
use datafusion_postgres::arrow_pg::encoder::encode_value;
use futures::StreamExt;
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse};
use pgwire::api::Type;
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use pgwire::types::format::FormatOptions;
use pgwire::types::ToSqlText;
use postgres_types::{IsNull, ToSql};
use switchyard_connectors::PG_TYPE_KEY;

use crate::pgwire::protocol::errors::df_error;

/// The wire type of an Arrow field: the connector's PostgreSQL type where it named
/// one, else arrow-pg's mapping.
pub fn pg_type(field: &Arc<Field>) -> PgWireResult<Type> {
    let named = field
        .metadata()
        .get(PG_TYPE_KEY)
        .and_then(|name| match name.as_str() {
            "uuid" => Some(Type::UUID),
            "json" => Some(Type::JSON),
            "jsonb" => Some(Type::JSONB),
            "varchar" => Some(Type::VARCHAR),
            "bpchar" => Some(Type::BPCHAR),
            "name" => Some(Type::NAME),
            _ => None,
        });
    match named {
        Some(t) if is_text(field.data_type()) => Ok(t),
        _ => field_into_pg_type(field),
    }
}

/// The RowDescription of `schema` in `format`.
pub fn pg_fields(
    schema: &Schema,
    format: &Format,
    options: Option<Arc<FormatOptions>>,
) -> PgWireResult<Vec<FieldInfo>> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let info = FieldInfo::new(
                crate::pgwire::pgcompat::column_names::shown_name(f.name()).to_string(),
                None,
                None,
                pg_type(f)?,
                format.format_for(i),
            );
            Ok(match &options {
                Some(o) => info.with_format_options(Arc::clone(o)),
                None => info,
            })
        })
        .collect()
}

/// Runs `df` and streams its rows encoded in `format`.
pub async fn encode_dataframe(
    df: DataFrame,
    format: &Format,
    options: Option<Arc<FormatOptions>>,
) -> PgWireResult<QueryResponse> {
    let batches = df.execute_stream().await.map_err(df_error)?;
    encode_stream(batches, format, options)
}

/// Streams `batches`' rows encoded in `format`; an error in the stream (a guardrail,
/// a cancel, an origin failure) ends the rows with its SQLSTATE.
pub fn encode_stream(
    batches: SendableRecordBatchStream,
    format: &Format,
    options: Option<Arc<FormatOptions>>,
) -> PgWireResult<QueryResponse> {
    let fields = Arc::new(pg_fields(batches.schema().as_ref(), format, options)?);
    let for_rows = Arc::clone(&fields);
    let rows = batches
        .map(move |batch| {
            let rows: Box<dyn Iterator<Item = PgWireResult<DataRow>> + Send + Sync> = match batch {
                Ok(batch) => encode_batch(Arc::clone(&for_rows), batch),
                Err(e) => Box::new(std::iter::once(Err(df_error(e)))),
            };
            futures::stream::iter(rows)
        })
        .flatten();
    Ok(QueryResponse::new(fields, rows))
}

/// The session's output settings: DateStyle, IntervalStyle, extra_float_digits and
/// TimeZone (which pgwire's own reading leaves out).
pub fn format_options(metadata: &HashMap<String, String>) -> FormatOptions {
    let mut options = FormatOptions::from_client_metadata(metadata);
    if let Some(zone) = metadata
        .get("timezone")
        .or_else(|| metadata.get("TimeZone"))
    {
        options.time_zone = zone.clone();
    }
    options
}

/// `batch` with its timestamptz values shown in the session's time zone, as
/// PostgreSQL shows them (the instants are unchanged).
fn in_session_zone(batch: RecordBatch, options: &FormatOptions) -> PgWireResult<RecordBatch> {
    let zone: Arc<str> = Arc::from(options.time_zone.as_str());
    if zone.parse::<Tz>().is_err() {
        return Ok(batch);
    }
    fn zoned(data_type: &DataType, zone: &Arc<str>) -> Option<DataType> {
        match data_type {
            DataType::Timestamp(unit, Some(tz)) if tz != zone => {
                Some(DataType::Timestamp(*unit, Some(Arc::clone(zone))))
            }
            DataType::List(f) => zoned(f.data_type(), zone)
                .map(|t| DataType::List(Arc::new(f.as_ref().clone().with_data_type(t)))),
            _ => None,
        }
    }
    let schema = batch.schema();
    if !schema
        .fields()
        .iter()
        .any(|f| zoned(f.data_type(), &zone).is_some())
    {
        return Ok(batch);
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (f, c) in schema.fields().iter().zip(batch.columns()) {
        match zoned(f.data_type(), &zone) {
            Some(t) => {
                columns.push(cast(c, &t).map_err(|e| PgWireError::ApiError(Box::new(e)))?);
                fields.push(Arc::new(f.as_ref().clone().with_data_type(t)));
            }
            None => {
                columns.push(Arc::clone(c));
                fields.push(Arc::clone(f));
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| PgWireError::ApiError(Box::new(e)))
}

/// The rows of `batch`, one DataRow each, for columns described by `fields`.
pub fn encode_batch(
    fields: Arc<Vec<FieldInfo>>,
    batch: RecordBatch,
) -> Box<dyn Iterator<Item = PgWireResult<DataRow>> + Send + Sync> {
    let (batch, zoning) = match fields.first() {
        Some(f) => match in_session_zone(batch.clone(), f.format_options()) {
            Ok(b) => (b, None),
            Err(e) => (batch, Some(e)),
        },
        None => (batch, None),
    };
    if let Some(e) = zoning {
        return Box::new(std::iter::once(Err(e)))
            as Box<dyn Iterator<Item = PgWireResult<DataRow>> + Send + Sync>;
    }
    let writers: Vec<Writer> = batch
        .schema()
        .fields()
        .iter()
        .zip(fields.iter())
        .map(|(f, info)| Writer::for_column(f.data_type(), info))
        .collect();
    let mut encoder = DataRowEncoder::new(Arc::clone(&fields));
    let schema = batch.schema();
    Box::new((0..batch.num_rows()).map(move |row| {
        for (col, writer) in writers.iter().enumerate() {
            let array = batch.column(col);
            let field = &fields[col];
            if array.is_null(row) {
                encoder.encode_field_with_type_and_format(
                    &None::<i32>,
                    field.datatype(),
                    field.format(),
                    field.format_options(),
                )?;
                continue;
            }
            let own = match writer {
                Writer::ArrowPg => None,
                Writer::FloatText => Some(float_text(array, row, field.format_options())),
                Writer::IntervalText => interval_text(array, row),
                Writer::ArrayText => Some(array_text(array, row, field.format_options())?),
                Writer::ZonedText(zone) => datetime_text(array, row, Some(zone)),
                Writer::DateTimeText => datetime_text(array, row, None),
                Writer::UuidBinary => Some(uuid_binary(array.as_string::<i32>().value(row))?),
                Writer::JsonbBinary => {
                    let text = array.as_string::<i32>().value(row);
                    let mut out = Vec::with_capacity(text.len() + 1);
                    out.push(1); // jsonb binary format version
                    out.extend_from_slice(text.as_bytes());
                    Some(out)
                }
            };
            match own {
                Some(bytes) => encoder.encode_field_with_type_and_format(
                    &Raw(&bytes),
                    field.datatype(),
                    field.format(),
                    field.format_options(),
                )?,
                None => encode_value(&mut encoder, array, row, schema.field(col), field)?,
            }
        }
        Ok(encoder.take_row())
    }))
}

/// The values of an encoded DataRow (`None` for NULL), or `None` when it is malformed.
pub fn row_values(row: &DataRow) -> Option<Vec<Option<&[u8]>>> {
    let data = &row.data[..];
    let mut out = Vec::with_capacity(row.field_count.max(0) as usize);
    let mut pos = 0;
    for _ in 0..row.field_count {
        let len = i32::from_be_bytes(data.get(pos..pos + 4)?.try_into().ok()?);
        pos += 4;
        if len < 0 {
            out.push(None);
            continue;
        }
        out.push(Some(data.get(pos..pos + len as usize)?));
        pos += len as usize;
    }
    Some(out)
}

/// Who writes a column's non-NULL values.
#[derive(Debug, Clone, Copy)]
enum Writer {
    ArrowPg,
    FloatText,
    IntervalText,
    UuidBinary,
    JsonbBinary,
    ArrayText,
    /// Timestamptz text in the column's zone (parsed once per batch).
    ZonedText(Tz),
    /// Timestamp and time text (arrow-pg writes six fraction digits always).
    DateTimeText,
}

impl Writer {
    fn for_column(data_type: &DataType, field: &FieldInfo) -> Writer {
        let text = field.format() == FieldFormat::Text;
        match data_type {
            DataType::Float32 | DataType::Float64 if text => Writer::FloatText,
            DataType::Interval(_) if text && is_postgres_style(field.format_options()) => {
                Writer::IntervalText
            }
            DataType::List(_) if text => Writer::ArrayText,
            DataType::Timestamp(_, Some(zone)) if text => match zone.parse::<Tz>() {
                Ok(zone) => Writer::ZonedText(zone),
                Err(_) => Writer::ArrowPg,
            },
            DataType::Timestamp(_, None) | DataType::Time32(_) | DataType::Time64(_) if text => {
                Writer::DateTimeText
            }
            DataType::Utf8 if !text && *field.datatype() == Type::UUID => Writer::UuidBinary,
            DataType::Utf8 if !text && *field.datatype() == Type::JSONB => Writer::JsonbBinary,
            _ => Writer::ArrowPg,
        }
    }
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8)
}

fn is_postgres_style(options: &FormatOptions) -> bool {
    options.interval_style.eq_ignore_ascii_case("postgres")
}

/// Bytes already in the column's wire form.
#[derive(Debug)]
struct Raw<'a>(&'a [u8]);

impl ToSql for Raw<'_> {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.put_slice(self.0);
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres_types::to_sql_checked!();
}

impl ToSqlText for Raw<'_> {
    fn to_sql_text(
        &self,
        _: &Type,
        out: &mut BytesMut,
        _: &FormatOptions,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.put_slice(self.0);
        Ok(IsNull::No)
    }
}

fn float_text(array: &dyn Array, row: usize, options: &FormatOptions) -> Vec<u8> {
    let text = match array.data_type() {
        DataType::Float32 => {
            let v = array
                .as_primitive::<datafusion::arrow::datatypes::Float32Type>()
                .value(row);
            pg_float(v as f64, 6, options.extra_float_digits, Some(v))
        }
        _ => {
            let v = array
                .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                .value(row);
            pg_float(v, 15, options.extra_float_digits, None)
        }
    };
    text.into_bytes()
}

/// float4/float8 text as PostgreSQL 12+ writes it: the shortest text that reads back
/// to the same value (`extra_float_digits` > 0, the default), else `%.{DIG+extra}g`;
/// positional notation for decimal exponents in [-4, DIG), else `1.5e+20`.
fn pg_float(v: f64, dig: i32, extra: i8, as_f32: Option<f32>) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // Scientific form gives the significant digits and the decimal exponent.
    let sci = if extra > 0 {
        match as_f32 {
            Some(f) => format!("{f:e}"),
            None => format!("{v:e}"),
        }
    } else {
        let digits = (dig + extra as i32).max(1) as usize;
        format!("{:.*e}", digits - 1, v)
    };
    let (mantissa, exponent) = sci.split_once('e').expect("{:e} has an exponent");
    let exponent: i32 = exponent.parse().expect("{:e} exponent is a number");
    let negative = mantissa.starts_with('-');
    let mut digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
    }
    let threshold = if extra > 0 {
        dig
    } else {
        (dig + extra as i32).max(1)
    };
    let mut out = String::with_capacity(digits.len() + 8);
    if negative {
        out.push('-');
    }
    if exponent < -4 || exponent >= threshold {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exponent < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exponent.abs()));
    } else if exponent < 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-exponent - 1) as usize));
        out.push_str(&digits);
    } else {
        let int_len = exponent as usize + 1;
        if digits.len() <= int_len {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', int_len - digits.len()));
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    }
    out
}

/// A list in PostgreSQL's array text form: `{1,NULL,"a b","x\"y"}`, each element
/// written as the column of its type would be.
fn array_text(array: &dyn Array, row: usize, options: &FormatOptions) -> PgWireResult<Vec<u8>> {
    let list = array.as_list::<i32>();
    let values = list.value(row);
    let element = match list.data_type() {
        DataType::List(f) => Arc::clone(f),
        _ => unreachable!("as_list checked the type"),
    };
    let info = FieldInfo::new(
        element.name().clone(),
        None,
        None,
        pg_type(&element)?,
        FieldFormat::Text,
    )
    .with_format_options(Arc::new(options.clone()));
    let fields = Arc::new(vec![info]);
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Arc::clone(&element)])),
        vec![values],
    )
    .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    let mut out = vec![b'{'];
    for (i, encoded) in encode_batch(fields, batch).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let encoded = encoded?;
        let Some(Some(text)) = row_values(&encoded).and_then(|f| f.first().copied()) else {
            out.extend_from_slice(b"NULL");
            continue;
        };
        let text = String::from_utf8_lossy(text);
        // A nested array is a dimension of this one (`{{1,2},{3,4}}`), never quoted.
        let nested = matches!(element.data_type(), DataType::List(_));
        let quote = !nested
            && (text.is_empty()
                || text.eq_ignore_ascii_case("NULL")
                || text.bytes().any(|b| {
                    matches!(b, b'"' | b'\\' | b'{' | b'}' | b',')
                        || b.is_ascii_whitespace()
                        || b == 0x0b
                }));
        if quote {
            out.push(b'"');
            for b in text.bytes() {
                if b == b'"' || b == b'\\' {
                    out.push(b'\\');
                }
                out.push(b);
            }
            out.push(b'"');
        } else {
            out.extend_from_slice(text.as_bytes());
        }
    }
    out.push(b'}');
    Ok(out)
}

/// A timestamp or time value in microseconds (since the epoch, or midnight).
fn micros(array: &dyn Array, row: usize) -> Option<i64> {
    use datafusion::arrow::datatypes::{
        Time32MillisecondType, Time32SecondType, Time64MicrosecondType, Time64NanosecondType,
        TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
        TimestampSecondType,
    };
    Some(match array.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => array
            .as_primitive::<TimestampSecondType>()
            .value(row)
            .checked_mul(1_000_000)?,
        DataType::Timestamp(TimeUnit::Millisecond, _) => array
            .as_primitive::<TimestampMillisecondType>()
            .value(row)
            .checked_mul(1000)?,
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            array.as_primitive::<TimestampMicrosecondType>().value(row)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => array
            .as_primitive::<TimestampNanosecondType>()
            .value(row)
            .div_euclid(1000),
        DataType::Time32(TimeUnit::Second) => {
            array.as_primitive::<Time32SecondType>().value(row) as i64 * 1_000_000
        }
        DataType::Time32(_) => {
            array.as_primitive::<Time32MillisecondType>().value(row) as i64 * 1000
        }
        DataType::Time64(TimeUnit::Microsecond) => {
            array.as_primitive::<Time64MicrosecondType>().value(row)
        }
        DataType::Time64(_) => array.as_primitive::<Time64NanosecondType>().value(row) / 1000,
        _ => return None,
    })
}

/// `.5` for half a second: PostgreSQL's fractional seconds, trailing zeros dropped.
fn push_fraction(out: &mut String, micros: i64) {
    let fraction = micros.rem_euclid(1_000_000);
    if fraction != 0 {
        let digits = format!("{fraction:06}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

/// A timestamp (in its column's zone when it has one, the session's; see
/// [`in_session_zone`]) or a time, as PostgreSQL writes it with DateStyle ISO:
/// `2024-03-01 16:04:56.789+05:30`, `2024-03-01 12:34:56`, `13:14:15.5`.
fn datetime_text(array: &dyn Array, row: usize, zone: Option<&Tz>) -> Option<Vec<u8>> {
    use chrono::{Offset, TimeZone};
    use std::fmt::Write;
    let micros = micros(array, row)?;
    let mut out = String::with_capacity(32);
    if matches!(array.data_type(), DataType::Time32(_) | DataType::Time64(_)) {
        let seconds = micros.div_euclid(1_000_000);
        write!(
            out,
            "{:02}:{:02}:{:02}",
            seconds / 3600,
            seconds / 60 % 60,
            seconds % 60
        )
        .ok()?;
        push_fraction(&mut out, micros);
        return Some(out.into_bytes());
    }
    let utc = chrono::DateTime::from_timestamp_micros(micros)?;
    let Some(zone) = zone else {
        write!(out, "{}", utc.naive_utc().format("%Y-%m-%d %H:%M:%S")).ok()?;
        push_fraction(&mut out, micros);
        return Some(out.into_bytes());
    };
    let local = zone.from_utc_datetime(&utc.naive_utc());
    write!(out, "{}", local.format("%Y-%m-%d %H:%M:%S")).ok()?;
    push_fraction(&mut out, micros);
    let offset = local.offset().fix().local_minus_utc();
    let (sign, offset) = if offset < 0 {
        ('-', -offset)
    } else {
        ('+', offset)
    };
    write!(out, "{sign}{:02}", offset / 3600).ok()?;
    if offset % 3600 != 0 {
        write!(out, ":{:02}", offset % 3600 / 60).ok()?;
        if offset % 60 != 0 {
            write!(out, ":{:02}", offset % 60).ok()?;
        }
    }
    Some(out.into_bytes())
}

/// An interval's months, days and microseconds (PostgreSQL keeps microseconds).
fn interval_parts(array: &dyn Array, row: usize) -> Option<(i64, i64, i64)> {
    let any = array.as_any();
    match array.data_type() {
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let v = any.downcast_ref::<IntervalMonthDayNanoArray>()?.value(row);
            Some((v.months as i64, v.days as i64, v.nanoseconds / 1000))
        }
        DataType::Interval(IntervalUnit::DayTime) => {
            let v = any.downcast_ref::<IntervalDayTimeArray>()?.value(row);
            Some((0, v.days as i64, v.milliseconds as i64 * 1000))
        }
        DataType::Interval(IntervalUnit::YearMonth) => {
            let v = any.downcast_ref::<IntervalYearMonthArray>()?.value(row);
            Some((v as i64, 0, 0))
        }
        _ => None,
    }
}

fn interval_text(array: &dyn Array, row: usize) -> Option<Vec<u8>> {
    let (months, days, micros) = interval_parts(array, row)?;
    Some(pg_interval(months, days, micros).into_bytes())
}

/// An interval in IntervalStyle `postgres` (PostgreSQL's EncodeInterval):
/// `1 year 2 mons 3 days 04:05:06.5`, `-1 days +02:00:00`, `00:00:00`.
fn pg_interval(months: i64, days: i64, micros: i64) -> String {
    let mut out = String::new();
    let mut is_zero = true;
    let mut is_before = false;
    for (value, unit) in [(months / 12, "year"), (months % 12, "mon"), (days, "day")] {
        if value == 0 {
            continue;
        }
        if !is_zero {
            out.push(' ');
        }
        if is_before && value > 0 {
            out.push('+');
        }
        out.push_str(&format!(
            "{value} {unit}{}",
            if value != 1 { "s" } else { "" }
        ));
        is_before = value < 0;
        is_zero = false;
    }
    if is_zero || micros != 0 {
        let hours = micros / 3_600_000_000;
        let minutes = micros / 60_000_000 % 60;
        let seconds = micros / 1_000_000 % 60;
        let fraction = micros % 1_000_000;
        if !is_zero {
            out.push(' ');
        }
        if micros < 0 {
            out.push('-');
        } else if is_before {
            out.push('+');
        }
        out.push_str(&format!(
            "{:02}:{:02}:{:02}",
            hours.abs(),
            minutes.abs(),
            seconds.abs()
        ));
        if fraction != 0 {
            let digits = format!("{:06}", fraction.abs());
            out.push('.');
            out.push_str(digits.trim_end_matches('0'));
        }
    }
    out
}

/// A uuid's 16 bytes from its text (hyphens and braces as PostgreSQL accepts them).
fn uuid_binary(text: &str) -> PgWireResult<Vec<u8>> {
    let hex: Vec<u8> = text
        .bytes()
        .filter(|b| !matches!(b, b'-' | b'{' | b'}'))
        .collect();
    let bad = || {
        crate::pgwire::protocol::errors::user_error(
            switchyard_engine::SqlState::INVALID_TEXT_REPRESENTATION,
            format!("invalid input syntax for type uuid: \"{text}\""),
        )
    };
    if hex.len() != 32 {
        return Err(bad());
    }
    hex.chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
                .ok_or_else(bad)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f8(v: f64) -> String {
        pg_float(v, 15, 1, None)
    }

    #[test]
    fn floats_print_as_postgres_prints_them() {
        assert_eq!(f8(156.0), "156");
        assert_eq!(f8(1.5), "1.5");
        assert_eq!(f8(-0.25), "-0.25");
        assert_eq!(f8(0.0001), "0.0001");
        assert_eq!(f8(0.00001), "1e-05");
        assert_eq!(f8(1e15), "1e+15");
        assert_eq!(f8(123456789012345.0), "123456789012345");
        assert_eq!(f8(1.2345678901234567e300), "1.2345678901234567e+300");
        assert_eq!(f8(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(f8(f64::INFINITY), "Infinity");
        assert_eq!(f8(f64::NAN), "NaN");
        assert_eq!(f8(-0.0), "-0");
        assert_eq!(pg_float(1.1f32 as f64, 6, 1, Some(1.1)), "1.1");
        assert_eq!(pg_float(1234567.0, 6, 1, Some(1234567.0)), "1.234567e+06");
        // extra_float_digits = 0: %.15g
        assert_eq!(pg_float(0.1 + 0.2, 15, 0, None), "0.3");
    }

    #[test]
    fn intervals_print_as_postgres_prints_them() {
        let day = 86_400_000_000i64;
        assert_eq!(
            pg_interval(14, 3, 4 * 3_600_000_000 + 5 * 60_000_000 + 6_500_000),
            "1 year 2 mons 3 days 04:05:06.5"
        );
        assert_eq!(pg_interval(0, 0, 0), "00:00:00");
        assert_eq!(pg_interval(0, 1, 0), "1 day");
        assert_eq!(pg_interval(0, -1, 2 * 3_600_000_000), "-1 days +02:00:00");
        assert_eq!(pg_interval(0, 0, -1_000_000), "-00:00:01");
        assert_eq!(pg_interval(-13, 0, 0), "-1 years -1 mons");
        assert_eq!(pg_interval(0, 0, 30 * day), "720:00:00");
        assert_eq!(pg_interval(1, 0, 1), "1 mon 00:00:00.000001");
    }

    #[test]
    fn arrays_print_as_postgres_prints_them() {
        use datafusion::arrow::array::{ListArray, StringArray};
        use datafusion::arrow::buffer::OffsetBuffer;
        let text = ListArray::try_new(
            Arc::new(Field::new("item", DataType::Utf8, true)),
            OffsetBuffer::from_lengths([6]),
            Arc::new(StringArray::from(vec![
                Some("a b"),
                None,
                Some("c"),
                Some(""),
                Some("NULL"),
                Some("x\"y"),
            ])),
            None,
        )
        .unwrap();
        let options = FormatOptions::default();
        assert_eq!(
            String::from_utf8(array_text(&text, 0, &options).unwrap()).unwrap(),
            r#"{"a b",NULL,c,"","NULL","x\"y"}"#
        );
        let ints =
            ListArray::from_iter_primitive::<datafusion::arrow::datatypes::Int32Type, _, _>([
                Some(vec![Some(1), Some(2)]),
                Some(vec![Some(3), None]),
            ]);
        let nested = ListArray::try_new(
            Arc::new(Field::new("item", ints.data_type().clone(), true)),
            OffsetBuffer::from_lengths([2]),
            Arc::new(ints),
            None,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(array_text(&nested, 0, &options).unwrap()).unwrap(),
            "{{1,2},{3,NULL}}"
        );
    }

    #[test]
    fn timestamps_and_times_print_as_postgres_prints_them() {
        use datafusion::arrow::array::{Time64NanosecondArray, TimestampNanosecondArray};
        let at = 1_709_296_496_000_000_000i64; // 2024-03-01 12:34:56 UTC
        let ts = TimestampNanosecondArray::from(vec![at, at + 500_000_000, -1_000]);
        let text = |a: &dyn Array, row, zone: Option<&Tz>| {
            String::from_utf8(datetime_text(a, row, zone).unwrap()).unwrap()
        };
        assert_eq!(text(&ts, 0, None), "2024-03-01 12:34:56");
        assert_eq!(text(&ts, 1, None), "2024-03-01 12:34:56.5");
        assert_eq!(text(&ts, 2, None), "1969-12-31 23:59:59.999999");
        let tz = ts.clone().with_timezone("Asia/Kolkata");
        let zone: Tz = "Asia/Kolkata".parse().unwrap();
        assert_eq!(text(&tz, 1, Some(&zone)), "2024-03-01 18:04:56.5+05:30");
        let zone: Tz = "America/New_York".parse().unwrap();
        assert_eq!(text(&tz, 0, Some(&zone)), "2024-03-01 07:34:56-05");
        let times = Time64NanosecondArray::from(vec![47_655_000_000_000, 1_000]);
        assert_eq!(text(&times, 0, None), "13:14:15");
        assert_eq!(text(&times, 1, None), "00:00:00.000001");
    }

    #[test]
    fn uuids_are_sixteen_bytes() {
        let b = uuid_binary("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap();
        assert_eq!(b.len(), 16);
        assert_eq!(b[0], 0xa0);
        assert_eq!(b[15], 0x11);
        assert!(uuid_binary("nope").is_err());
    }
}
