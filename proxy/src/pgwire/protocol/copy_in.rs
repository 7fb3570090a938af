//! `COPY table [(columns)] FROM STDIN` (psql's `\copy table from file`, drivers'
//! bulk loads): checked as the insert it amounts to, then the client's CopyData is
//! parsed as PostgreSQL's text or CSV format into batches of text columns, each
//! written as one insert at the origin by the engine ([`switchyard_engine::write::CopyIn`]).
//! An error stops the writing; it is reported at CopyDone, with nothing kept.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayBuilder, RecordBatch, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::sql::sqlparser::ast::{CopySource, CopyTarget, ObjectName, Statement};
use futures::{Sink, SinkExt};
use pgwire::api::copy::CopyHandler;
use pgwire::api::results::Tag;
use pgwire::api::ClientInfo;
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use pgwire::messages::response::CommandComplete;
use pgwire::messages::PgWireBackendMessage;
use switchyard_engine::write::CopyIn;
use switchyard_engine::SqlState;
use tokio::sync::Mutex;

use crate::pgwire::protocol::copy::CopyFormat;
use crate::pgwire::protocol::errors::{engine_error, pg_error, user_error};

/// Rows per insert sent to the origin.
const BATCH_ROWS: usize = 1000;

/// A `COPY ... FROM STDIN` statement's parts.
pub struct CopyFrom {
    /// The table as written.
    pub table: ObjectName,
    /// The columns listed (empty: all).
    pub columns: Vec<String>,
    /// Text or CSV, and their options.
    pub format: CopyFormat,
}

/// For `COPY table [(columns)] FROM STDIN`: its parts. `None` for any other statement.
pub fn copy_from_stdin(statement: &Statement) -> Option<PgWireResult<CopyFrom>> {
    let Statement::Copy {
        source,
        to: false,
        target,
        options,
        legacy_options,
        ..
    } = statement
    else {
        return None;
    };
    Some((|| {
        if !matches!(target, CopyTarget::Stdin) {
            return Err(user_error(
                SqlState::FEATURE_NOT_SUPPORTED,
                "COPY FROM a server file or program is not supported; use COPY ... FROM STDIN (psql's \\copy)",
            ));
        }
        let CopySource::Table {
            table_name,
            columns,
        } = source
        else {
            return Err(user_error(
                SqlState::SYNTAX_ERROR,
                "COPY FROM needs a table",
            ));
        };
        Ok(CopyFrom {
            table: table_name.clone(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            format: CopyFormat::of(options, legacy_options)?,
        })
    })())
}

/// The COPY under way on one connection, if any.
struct Under {
    copy: CopyIn,
    parser: Parser,
    builders: Vec<StringBuilder>,
    schema: Arc<Schema>,
    /// The first error; later data is discarded until CopyDone reports it.
    failed: Option<PgWireError>,
}

/// The connection's COPY FROM STDIN state, shared by the statement hook that starts
/// a COPY and pgwire's copy handler that feeds it.
#[derive(Default)]
pub struct CopyIns {
    under: Mutex<Option<Under>>,
}

impl CopyIns {
    /// Begins feeding `copy` with rows in `format`.
    pub async fn start(&self, copy: CopyIn, format: CopyFormat) {
        let columns = copy.columns();
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|c| Field::new(c, DataType::Utf8, true))
                .collect::<Vec<_>>(),
        ));
        let under = Under {
            builders: columns.iter().map(|_| StringBuilder::new()).collect(),
            parser: Parser::new(format, columns.len()),
            copy,
            schema,
            failed: None,
        };
        *self.under.lock().await = Some(under);
    }
}

impl Under {
    fn pending(&self) -> usize {
        self.builders.first().map_or(0, |b| b.len())
    }

    async fn flush(&mut self) -> PgWireResult<()> {
        if self.pending() == 0 {
            return Ok(());
        }
        let columns = self
            .builders
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as _)
            .collect();
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)
            .map_err(|e| user_error(SqlState::INTERNAL_ERROR, e.to_string()))?;
        self.copy.write(batch).await.map_err(pg_error)
    }

    async fn feed(&mut self, data: &[u8]) -> PgWireResult<()> {
        for row in self.parser.feed(data)? {
            for (b, v) in self.builders.iter_mut().zip(row) {
                b.append_option(v);
            }
            if self.pending() >= BATCH_ROWS {
                self.flush().await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl CopyHandler for CopyIns {
    async fn on_copy_data<C>(&self, _client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut guard = self.under.lock().await;
        let Some(under) = guard.as_mut() else {
            return Ok(());
        };
        if under.failed.is_none() {
            if let Err(e) = under.feed(&copy_data.data).await {
                under.failed = Some(e);
            }
        }
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let Some(mut under) = self.under.lock().await.take() else {
            return Err(user_error(
                SqlState::PROTOCOL_VIOLATION,
                "CopyDone without a COPY",
            ));
        };
        let mut outcome = match under.failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        };
        if outcome.is_ok() {
            outcome = match under.parser.finish() {
                Ok(rows) => {
                    let mut r = Ok(());
                    for row in rows {
                        for (b, v) in under.builders.iter_mut().zip(row) {
                            b.append_option(v);
                        }
                    }
                    if let Err(e) = under.flush().await {
                        r = Err(e);
                    }
                    r
                }
                Err(e) => Err(e),
            };
        }
        let rows = match outcome {
            Ok(()) => under.copy.finish().await.map_err(pg_error)?,
            Err(e) => {
                return Err(pg_error(under.copy.fail(engine_error(&e)).await));
            }
        };
        let tag = Tag::new("COPY").with_rows(usize::try_from(rows).unwrap_or(usize::MAX));
        client
            .send(PgWireBackendMessage::CommandComplete(
                CommandComplete::from(tag),
            ))
            .await?;
        Ok(())
    }

    async fn on_copy_fail<C>(&self, _client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let message = format!("COPY from stdin failed: {}", fail.message);
        let error = switchyard_engine::EngineError::coded(SqlState::QUERY_CANCELED, &message);
        match self.under.lock().await.take() {
            Some(under) => pg_error(under.copy.fail(error).await),
            None => pg_error(error),
        }
    }
}

/// PostgreSQL's COPY text and CSV formats, parsed as data arrives.
struct Parser {
    format: CopyFormat,
    columns: usize,
    /// Bytes of a line not yet complete.
    pending: Vec<u8>,
    header_skipped: bool,
    ended: bool,
    line: u64,
}

type Row = Vec<Option<String>>;

impl Parser {
    fn new(format: CopyFormat, columns: usize) -> Self {
        Parser {
            format,
            columns,
            pending: Vec::new(),
            header_skipped: false,
            ended: false,
            line: 0,
        }
    }

    /// The complete rows in what arrived so far.
    fn feed(&mut self, data: &[u8]) -> PgWireResult<Vec<Row>> {
        self.pending.extend_from_slice(data);
        let mut rows = Vec::new();
        while let Some(end) = self.record_end() {
            let record: Vec<u8> = self.pending.drain(..=end).collect();
            let record = &record[..record.len() - 1];
            let record = record.strip_suffix(b"\r").unwrap_or(record);
            if let Some(row) = self.record(record)? {
                rows.push(row);
            }
        }
        Ok(rows)
    }

    /// The rows left at CopyDone (a last line without its newline).
    fn finish(&mut self) -> PgWireResult<Vec<Row>> {
        if self.pending.is_empty() {
            return Ok(vec![]);
        }
        self.pending.push(b'\n');
        self.feed(&[])
    }

    /// Where the next record ends (its newline), outside CSV quotes.
    fn record_end(&self) -> Option<usize> {
        if !self.format.is_csv() {
            return self.pending.iter().position(|&b| b == b'\n');
        }
        let quote = self.format.quote();
        let mut quoted = false;
        for (i, &b) in self.pending.iter().enumerate() {
            if b == quote {
                quoted = !quoted;
            } else if b == b'\n' && !quoted {
                return Some(i);
            }
        }
        None
    }

    fn bad(&self, what: &str) -> PgWireError {
        user_error(
            SqlState::BAD_COPY_FILE_FORMAT,
            format!("COPY from stdin, line {}: {what}", self.line),
        )
    }

    fn record(&mut self, record: &[u8]) -> PgWireResult<Option<Row>> {
        self.line += 1;
        if self.ended {
            return Ok(None);
        }
        if record == b"\\." {
            self.ended = true;
            return Ok(None);
        }
        if self.format.header() && !self.header_skipped {
            self.header_skipped = true;
            return Ok(None);
        }
        let row = if self.format.is_csv() {
            self.csv(record)?
        } else {
            self.text(record)?
        };
        if row.len() != self.columns {
            return Err(self.bad(&format!(
                "{} columns, the COPY names {}",
                row.len(),
                self.columns
            )));
        }
        Ok(Some(row))
    }

    fn text(&self, record: &[u8]) -> PgWireResult<Row> {
        let delimiter = self.format.delimiter();
        let null = self.format.null().as_bytes();
        let mut row = Vec::new();
        for raw in record.split(|&b| b == delimiter) {
            row.push(raw.to_vec());
        }
        // A delimiter escaped with a backslash is data: join the pieces back.
        let mut fields: Vec<Vec<u8>> = Vec::new();
        for piece in row {
            match fields.last_mut() {
                Some(last) if ends_escaped(last) => {
                    last.push(delimiter);
                    last.extend_from_slice(&piece);
                }
                _ => fields.push(piece),
            }
        }
        fields
            .into_iter()
            .map(|f| {
                if f == null {
                    return Ok(None);
                }
                let value = unescape(&f).ok_or_else(|| self.bad("invalid escape"))?;
                String::from_utf8(value)
                    .map(Some)
                    .map_err(|_| self.bad("not UTF-8"))
            })
            .collect()
    }

    fn csv(&self, record: &[u8]) -> PgWireResult<Row> {
        let delimiter = self.format.delimiter();
        let quote = self.format.quote();
        let null = self.format.null().as_bytes();
        let mut row = Vec::new();
        let mut field = Vec::new();
        let mut quoted = false;
        let mut was_quoted = false;
        let mut i = 0;
        while i < record.len() {
            let b = record[i];
            if quoted {
                if b == quote {
                    if record.get(i + 1) == Some(&quote) {
                        field.push(quote);
                        i += 1;
                    } else {
                        quoted = false;
                    }
                } else {
                    field.push(b);
                }
            } else if b == quote {
                quoted = true;
                was_quoted = true;
            } else if b == delimiter {
                row.push(self.csv_value(std::mem::take(&mut field), was_quoted, null)?);
                was_quoted = false;
            } else {
                field.push(b);
            }
            i += 1;
        }
        if quoted {
            return Err(self.bad("unterminated CSV quoted field"));
        }
        row.push(self.csv_value(field, was_quoted, null)?);
        Ok(row)
    }

    fn csv_value(&self, field: Vec<u8>, quoted: bool, null: &[u8]) -> PgWireResult<Option<String>> {
        // An unquoted field equal to the NULL string is NULL; quoted, it is text.
        if !quoted && field == null {
            return Ok(None);
        }
        String::from_utf8(field)
            .map(Some)
            .map_err(|_| self.bad("not UTF-8"))
    }
}

/// Whether `field` ends in an odd number of backslashes (its last byte is escaped).
fn ends_escaped(field: &[u8]) -> bool {
    field.iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 1
}

/// COPY text escapes: `\\`, `\n`, `\t`, `\r`, `\b`, `\f`, `\v`, octal `\NNN`, hex `\xHH`;
/// any other escaped byte is itself.
fn unescape(field: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let b = field[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let next = *field.get(i + 1)?;
        i += 2;
        match next {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(next - b'0');
                for _ in 0..2 {
                    match field.get(i) {
                        Some(d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(u8::try_from(v & 0xff).ok()?);
            }
            b'x' => {
                let mut v = 0u32;
                let mut digits = 0;
                while digits < 2 {
                    match field.get(i).and_then(|d| (*d as char).to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d;
                            i += 1;
                            digits += 1;
                        }
                        None => break,
                    }
                }
                if digits == 0 {
                    out.push(b'x');
                } else {
                    out.push(u8::try_from(v).ok()?);
                }
            }
            other => out.push(other),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser as SqlParser;

    fn format(sql: &str) -> CopyFormat {
        let statement = SqlParser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0);
        match copy_from_stdin(&statement) {
            Some(Ok(f)) => f.format,
            _ => panic!("{sql} is a COPY FROM STDIN"),
        }
    }

    #[test]
    fn text_rows_split_across_messages_with_escapes_and_nulls() {
        let mut p = Parser::new(format("COPY t FROM STDIN"), 3);
        assert!(p.feed(b"1\ta\\tb\t\\N\n2\tx\\\\").unwrap().len() == 1);
        let rows = p.feed(b"y\t\\101\\x42\n\\.\nignored\n").unwrap();
        assert_eq!(
            rows,
            [vec![
                Some("2".into()),
                Some("x\\y".into()),
                Some("AB".into())
            ]]
        );
        let mut p = Parser::new(format("COPY t FROM STDIN"), 2);
        assert_eq!(
            p.feed(b"a\\\tb\tc\n").unwrap(),
            [vec![Some("a\tb".into()), Some("c".into())]]
        );
        assert!(p.feed(b"too\tmany\tcolumns\n").is_err());
    }

    #[test]
    fn csv_rows_with_quotes_newlines_header_and_null() {
        let mut p = Parser::new(
            format("COPY t FROM STDIN WITH (FORMAT csv, HEADER true)"),
            2,
        );
        let rows = p
            .feed(b"id,note\n1,\"a, \"\"b\"\"\nc\"\n2,\n3,\"\"")
            .unwrap();
        assert_eq!(
            rows,
            [
                vec![Some("1".into()), Some("a, \"b\"\nc".into())],
                vec![Some("2".into()), None],
            ]
        );
        assert_eq!(
            p.finish().unwrap(),
            [vec![Some("3".into()), Some("".into())]]
        );
    }
}
