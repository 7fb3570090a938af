//! Text output as PostgreSQL writes it, where arrow-pg's differs.
//!
//! arrow-pg always prints six fractional-second digits (`00:16:00.000000+00`);
//! PostgreSQL trims trailing zeros (`00:16:00+00`, `00:16:00.5+00`). Clients that
//! compare or parse text (and our differential tests) see PostgreSQL's form.

use bytes::{BufMut, BytesMut};
use pgwire::api::results::{FieldFormat, FieldInfo};
use pgwire::api::Type;
use pgwire::messages::data::DataRow;

/// Indexes of text-format timestamp columns, or `None` when no row needs rewriting.
pub fn timestamp_columns(fields: &[FieldInfo]) -> Option<Vec<bool>> {
    let marks: Vec<bool> = fields
        .iter()
        .map(|f| {
            f.format() == FieldFormat::Text
                && matches!(
                    *f.datatype(),
                    Type::TIMESTAMP | Type::TIMESTAMPTZ | Type::TIME | Type::TIMETZ
                )
        })
        .collect();
    marks.iter().any(|m| *m).then_some(marks)
}

/// The fields of a DataRow (`None` for NULL), or `None` when the row is malformed.
pub fn fields(row: &DataRow) -> Option<Vec<Option<&[u8]>>> {
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

/// Trims trailing zeros of the fractional seconds in the marked columns of `row`.
pub fn rewrite_row(mut row: DataRow, marks: &[bool]) -> DataRow {
    let Some(values) = fields(&row) else {
        return row;
    };
    let mut out = BytesMut::with_capacity(row.data.len());
    for (value, mark) in values
        .into_iter()
        .zip(marks.iter().chain(std::iter::repeat(&false)))
    {
        match (value, mark) {
            (None, _) => out.put_i32(-1),
            (Some(v), true) if std::str::from_utf8(v).is_ok() => {
                let trimmed = trim_fraction(std::str::from_utf8(v).expect("checked"));
                out.put_i32(trimmed.len() as i32);
                out.put_slice(trimmed.as_bytes());
            }
            (Some(v), _) => {
                out.put_i32(v.len() as i32);
                out.put_slice(v);
            }
        }
    }
    row.data = out;
    row
}

/// `text` without trailing zeros in its fractional seconds.
pub fn trim_fraction(text: &str) -> String {
    let Some(dot) = text.find('.') else {
        return text.to_string();
    };
    let digits_end = text[dot + 1..]
        .find(|c: char| !c.is_ascii_digit())
        .map_or(text.len(), |i| dot + 1 + i);
    let fraction = text[dot + 1..digits_end].trim_end_matches('0');
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..dot]);
    if !fraction.is_empty() {
        out.push('.');
        out.push_str(fraction);
    }
    out.push_str(&text[digits_end..]);
    out
}

#[cfg(test)]
mod tests {
    use super::trim_fraction;

    #[test]
    fn fractions_are_trimmed_like_postgres() {
        assert_eq!(
            trim_fraction("2024-02-28 00:16:00.000000+00"),
            "2024-02-28 00:16:00+00"
        );
        assert_eq!(
            trim_fraction("2024-02-28 00:16:00.500000+00"),
            "2024-02-28 00:16:00.5+00"
        );
        assert_eq!(
            trim_fraction("2024-02-28 00:16:00.123456"),
            "2024-02-28 00:16:00.123456"
        );
        assert_eq!(trim_fraction("2024-02-28 00:16:00"), "2024-02-28 00:16:00");
    }
}
