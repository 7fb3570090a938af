//! `COPY ... TO STDOUT`, as psql's `\copy (query) to file` and GUI exports send it:
//! the query (or table) is checked and run like any SELECT — row filters, masks,
//! guardrails and audit included — and its rows stream to the client as COPY text
//! or CSV. COPY to or from server files and COPY FROM STDIN stay refused.

use bytes::{BufMut, Bytes, BytesMut};
use datafusion::sql::sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use futures::StreamExt;
use pgwire::api::results::{CopyResponse, QueryResponse};
use pgwire::error::PgWireResult;
use pgwire::messages::copy::CopyData;

use crate::pgwire::protocol::errors::user_error;
use switchyard_engine::SqlState;

/// How rows are written.
#[derive(Debug, Clone)]
pub struct CopyFormat {
    csv: bool,
    delimiter: u8,
    header: bool,
    null: String,
    quote: u8,
}

/// For `COPY (query) TO STDOUT` / `COPY table [(cols)] TO STDOUT`: the query to run
/// and the output format. `None` for every other statement.
pub fn copy_to_stdout(
    statement: &Statement,
) -> Option<Result<(Statement, CopyFormat), pgwire::error::PgWireError>> {
    let Statement::Copy {
        source,
        to: true,
        target: CopyTarget::Stdout,
        options,
        legacy_options,
        ..
    } = statement
    else {
        return None;
    };
    Some(parse(source, options, legacy_options))
}

fn parse(
    source: &CopySource,
    options: &[CopyOption],
    legacy: &[CopyLegacyOption],
) -> Result<(Statement, CopyFormat), pgwire::error::PgWireError> {
    let format = CopyFormat::of(options, legacy)?;
    let query = match source {
        CopySource::Query(q) => Statement::Query(q.clone()),
        CopySource::Table {
            table_name,
            columns,
        } => {
            let list = if columns.is_empty() {
                "*".to_string()
            } else {
                columns
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let sql = format!("SELECT {list} FROM {table_name}");
            Parser::parse_sql(&PostgreSqlDialect {}, &sql)
                .ok()
                .and_then(|mut v| v.pop())
                .ok_or_else(|| {
                    user_error(
                        SqlState::SYNTAX_ERROR,
                        format!("cannot read COPY source {table_name}"),
                    )
                })?
        }
    };
    Ok((query, format))
}

impl CopyFormat {
    /// The format `COPY`'s options ask for.
    pub fn of(
        options: &[CopyOption],
        legacy: &[CopyLegacyOption],
    ) -> Result<CopyFormat, pgwire::error::PgWireError> {
        let mut format = CopyFormat {
            csv: false,
            delimiter: b'\t',
            header: false,
            null: "\\N".into(),
            quote: b'"',
        };
        let mut delimiter = None;
        let mut null = None;
        let unsupported = |what: String| {
            user_error(
                SqlState::FEATURE_NOT_SUPPORTED,
                format!("COPY option {what} is not supported"),
            )
        };
        for o in options {
            match o {
                CopyOption::Format(f) => match f.value.to_ascii_lowercase().as_str() {
                    "csv" => format.csv = true,
                    "text" => format.csv = false,
                    other => return Err(unsupported(format!("FORMAT {other}"))),
                },
                CopyOption::Header(h) => format.header = *h,
                CopyOption::Delimiter(c) if c.is_ascii() => delimiter = Some(*c as u8),
                CopyOption::Null(n) => null = Some(n.clone()),
                CopyOption::Quote(c) if c.is_ascii() => format.quote = *c as u8,
                other => return Err(unsupported(other.to_string())),
            }
        }
        for o in legacy {
            match o {
                CopyLegacyOption::Csv(csv_options) => {
                    format.csv = true;
                    for c in csv_options {
                        match c {
                            CopyLegacyCsvOption::Header => format.header = true,
                            CopyLegacyCsvOption::Quote(q) if q.is_ascii() => {
                                format.quote = *q as u8
                            }
                            other => return Err(unsupported(other.to_string())),
                        }
                    }
                }
                CopyLegacyOption::Delimiter(c) if c.is_ascii() => delimiter = Some(*c as u8),
                CopyLegacyOption::Null(n) => null = Some(n.clone()),
                other => return Err(unsupported(other.to_string())),
            }
        }
        if format.csv {
            format.delimiter = b',';
            format.null = String::new();
        }
        if let Some(d) = delimiter {
            format.delimiter = d;
        }
        if let Some(n) = null {
            format.null = n;
        }
        if format.header && !format.csv {
            return Err(unsupported("HEADER (only with FORMAT csv)".into()));
        }
        Ok(format)
    }

    /// CSV rather than text.
    pub fn is_csv(&self) -> bool {
        self.csv
    }

    /// The field delimiter.
    pub fn delimiter(&self) -> u8 {
        self.delimiter
    }

    /// Whether a header line comes first.
    pub fn header(&self) -> bool {
        self.header
    }

    /// The text of NULL.
    pub fn null(&self) -> &str {
        &self.null
    }

    /// The CSV quote.
    pub fn quote(&self) -> u8 {
        self.quote
    }
}

impl CopyFormat {
    fn put_value(&self, out: &mut BytesMut, value: Option<&[u8]>) {
        match value {
            None => out.put_slice(self.null.as_bytes()),
            Some(v) if self.csv => {
                let needs_quotes = v.is_empty()
                    || v.iter().any(|&b| {
                        b == self.delimiter || b == self.quote || b == b'\n' || b == b'\r'
                    })
                    || v == self.null.as_bytes();
                if needs_quotes {
                    out.put_u8(self.quote);
                    for &b in v {
                        if b == self.quote {
                            out.put_u8(self.quote);
                        }
                        out.put_u8(b);
                    }
                    out.put_u8(self.quote);
                } else {
                    out.put_slice(v);
                }
            }
            Some(v) => {
                for &b in v {
                    match b {
                        b'\\' => out.put_slice(b"\\\\"),
                        b'\n' => out.put_slice(b"\\n"),
                        b'\r' => out.put_slice(b"\\r"),
                        b'\t' if self.delimiter == b'\t' => out.put_slice(b"\\t"),
                        d if d == self.delimiter => {
                            out.put_u8(b'\\');
                            out.put_u8(d);
                        }
                        other => out.put_u8(other),
                    }
                }
            }
        }
    }

    fn line<'a>(&self, out: &mut BytesMut, values: impl Iterator<Item = Option<&'a [u8]>>) {
        for (i, v) in values.enumerate() {
            if i > 0 {
                out.put_u8(self.delimiter);
            }
            self.put_value(out, v);
        }
        out.put_u8(b'\n');
    }
}

/// The rows of `response` as a COPY-out stream (one CopyData per row; the CSV header
/// rides with the first row so the `COPY n` count stays the row count).
pub fn copy_out(mut response: QueryResponse, format: CopyFormat) -> CopyResponse {
    let fields_info = response.row_schema();
    let columns = fields_info.len();
    let mut header = None;
    if format.header {
        let mut h = BytesMut::new();
        let names: Vec<&str> = fields_info.iter().map(|f| f.name()).collect();
        format.line(&mut h, names.iter().map(|n| Some(n.as_bytes())));
        header = Some(h);
    }
    let rows = std::mem::replace(response.data_rows(), Box::pin(futures::stream::empty()));
    let stream = rows.map(move |row| -> PgWireResult<CopyData> {
        let row = row?;
        let values = crate::pgwire::protocol::encode::row_values(&row)
            .ok_or_else(|| user_error(SqlState::INTERNAL_ERROR, "malformed row from the query"))?;
        let mut out = header.take().unwrap_or_default();
        format.line(&mut out, values.into_iter());
        Ok(CopyData::new(Bytes::from(out)))
    });
    CopyResponse::new(0, columns, stream)
}
