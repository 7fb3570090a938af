//! SQL types a MongoDB dataset may declare for its columns.

use std::fmt;

/// A declared column type, written as in PostgreSQL (`int8`, `numeric(12,2)`, `text[]` ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnType {
    /// `int2` / `smallint`.
    Int2,
    /// `int4` / `integer` / `int`.
    Int4,
    /// `int8` / `bigint`.
    Int8,
    /// `float4` / `real`.
    Float4,
    /// `float8` / `double precision`.
    Float8,
    /// `numeric(precision, scale)`; bare `numeric` is `numeric(38, 10)`.
    Numeric {
        /// Total digits (at most 38).
        precision: u8,
        /// Digits after the point.
        scale: i8,
    },
    /// `text` / `varchar`.
    Text,
    /// `bool` / `boolean`.
    Bool,
    /// `date`.
    Date,
    /// `timestamp` (without time zone, read as UTC).
    Timestamp,
    /// `timestamptz`.
    Timestamptz,
    /// `jsonb` / `json`: the value as JSON text.
    Jsonb,
    /// `T[]`: an array of scalars.
    Array(Box<ColumnType>),
}

impl ColumnType {
    /// Parses a type name; `None` for names Switchyard cannot map.
    pub fn parse(text: &str) -> Option<ColumnType> {
        let t = text.trim().to_ascii_lowercase();
        if let Some(inner) = t.strip_suffix("[]") {
            let inner = ColumnType::parse(inner)?;
            return match inner {
                ColumnType::Array(_) | ColumnType::Jsonb => None,
                other => Some(ColumnType::Array(Box::new(other))),
            };
        }
        let t = t.split_whitespace().collect::<Vec<_>>().join(" ");
        Some(match t.as_str() {
            "int2" | "smallint" => ColumnType::Int2,
            "int4" | "int" | "integer" => ColumnType::Int4,
            "int8" | "bigint" => ColumnType::Int8,
            "float4" | "real" => ColumnType::Float4,
            "float8" | "double precision" => ColumnType::Float8,
            "text" | "varchar" | "character varying" | "string" => ColumnType::Text,
            "bool" | "boolean" => ColumnType::Bool,
            "date" => ColumnType::Date,
            "timestamp" | "timestamp without time zone" => ColumnType::Timestamp,
            "timestamptz" | "timestamp with time zone" => ColumnType::Timestamptz,
            "json" | "jsonb" => ColumnType::Jsonb,
            "numeric" | "decimal" => ColumnType::Numeric {
                precision: 38,
                scale: 10,
            },
            other => {
                let args = other
                    .strip_prefix("numeric")
                    .or_else(|| other.strip_prefix("decimal"))?
                    .trim()
                    .strip_prefix('(')?
                    .strip_suffix(')')?;
                let mut parts = args.split(',').map(str::trim);
                let precision: u8 = parts.next()?.parse().ok()?;
                let scale: i8 = match parts.next() {
                    Some(s) => s.parse().ok()?,
                    None => 0,
                };
                if parts.next().is_some()
                    || !(1..=38).contains(&precision)
                    || scale < 0
                    || scale as u8 > precision
                {
                    return None;
                }
                ColumnType::Numeric { precision, scale }
            }
        })
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::Int2 => f.write_str("int2"),
            ColumnType::Int4 => f.write_str("int4"),
            ColumnType::Int8 => f.write_str("int8"),
            ColumnType::Float4 => f.write_str("float4"),
            ColumnType::Float8 => f.write_str("float8"),
            ColumnType::Numeric { precision, scale } => write!(f, "numeric({precision},{scale})"),
            ColumnType::Text => f.write_str("text"),
            ColumnType::Bool => f.write_str("bool"),
            ColumnType::Date => f.write_str("date"),
            ColumnType::Timestamp => f.write_str("timestamp"),
            ColumnType::Timestamptz => f.write_str("timestamptz"),
            ColumnType::Jsonb => f.write_str("jsonb"),
            ColumnType::Array(inner) => write!(f, "{inner}[]"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ColumnType;

    #[test]
    fn parses_postgres_spellings() {
        assert_eq!(ColumnType::parse("BIGINT"), Some(ColumnType::Int8));
        assert_eq!(
            ColumnType::parse("numeric(12, 2)"),
            Some(ColumnType::Numeric {
                precision: 12,
                scale: 2
            })
        );
        assert_eq!(
            ColumnType::parse("text[]"),
            Some(ColumnType::Array(Box::new(ColumnType::Text)))
        );
        assert_eq!(
            ColumnType::parse("double   precision"),
            Some(ColumnType::Float8)
        );
        assert_eq!(ColumnType::parse("numeric(40,2)"), None);
        assert_eq!(ColumnType::parse("int[][]"), None);
        assert_eq!(ColumnType::parse("money"), None);
    }
}
