//! Reading a date or timestamp array's value as an instant, whatever its unit.

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Date64Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use datafusion::common::{exec_err, Result};

/// Value `i` of a date or timestamp array as a UTC instant (a date is its midnight,
/// a timestamp without zone its wall-clock time read as UTC); `None` when NULL.
pub fn instant(array: &ArrayRef, i: usize) -> Result<Option<DateTime<Utc>>> {
    if array.is_null(i) {
        return Ok(None);
    }
    let (secs, nanos) = match array.data_type() {
        DataType::Date32 => (
            i64::from(array.as_primitive::<Date32Type>().value(i)) * 86_400,
            0,
        ),
        DataType::Date64 => {
            let ms = array.as_primitive::<Date64Type>().value(i);
            (ms.div_euclid(1000), ms.rem_euclid(1000) * 1_000_000)
        }
        DataType::Timestamp(TimeUnit::Second, _) => {
            (array.as_primitive::<TimestampSecondType>().value(i), 0)
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            let v = array.as_primitive::<TimestampMillisecondType>().value(i);
            (v.div_euclid(1_000), v.rem_euclid(1_000) * 1_000_000)
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            let v = array.as_primitive::<TimestampMicrosecondType>().value(i);
            (v.div_euclid(1_000_000), v.rem_euclid(1_000_000) * 1_000)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            let v = array.as_primitive::<TimestampNanosecondType>().value(i);
            (v.div_euclid(1_000_000_000), v.rem_euclid(1_000_000_000))
        }
        DataType::Null => return Ok(None),
        other => return exec_err!("{other} is not a date or timestamp"),
    };
    match DateTime::from_timestamp(secs, nanos as u32) {
        Some(at) => Ok(Some(at)),
        None => exec_err!("timestamp out of range"),
    }
}
