//! Runs the `.slt` files in `tests/slt/` through Switchyard. Files whose first line
//! is `# differential` also run directly against the reference PostgreSQL database
//! (every origin's data in one place) and must pass there too: same answers, same
//! column types. `statement count N` checks the row count of a command.
//!
//! Column types are the letters of `query`: `I` integers (int2/4/8, oid), `R`
//! floating point and numeric, `B` boolean, `T` everything else. After changing what
//! a query returns, `SWITCHYARD_SLT_UPDATE=1 scripts/test slt` rewrites the files
//! with Switchyard's answers (review the diff: it is what Switchyard says, not what
//! PostgreSQL says).

use std::path::{Path, PathBuf};

use crate::common;
use crate::common::Harness;
use async_trait::async_trait;
use sqllogictest::{ColumnType, DBOutput, Runner};
use tokio_postgres::types::Type;
use tokio_postgres::{Client, SimpleQueryMessage};

/// A column's type as a `query` letter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Column {
    Text,
    Integer,
    Float,
    Bool,
    /// A letter of none of the above: never matches a column.
    Other(char),
}

impl ColumnType for Column {
    fn from_char(value: char) -> Option<Self> {
        Some(match value {
            'T' => Column::Text,
            'I' => Column::Integer,
            'R' => Column::Float,
            'B' => Column::Bool,
            other => Column::Other(other),
        })
    }

    fn to_char(&self) -> char {
        match self {
            Column::Text => 'T',
            Column::Integer => 'I',
            Column::Float => 'R',
            Column::Bool => 'B',
            Column::Other(c) => *c,
        }
    }
}

impl Column {
    fn of(t: &Type) -> Column {
        match *t {
            Type::INT2 | Type::INT4 | Type::INT8 | Type::OID => Column::Integer,
            Type::FLOAT4 | Type::FLOAT8 | Type::NUMERIC => Column::Float,
            Type::BOOL => Column::Bool,
            _ => Column::Text,
        }
    }
}

/// A client speaking the simple protocol, reporting errors as `SQLSTATE: message`.
struct Db {
    client: Client,
}

#[derive(Debug)]
struct DbError(String);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DbError {}

#[async_trait]
impl sqllogictest::AsyncDB for Db {
    type Error = DbError;
    type ColumnType = Column;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Column>, DbError> {
        let failed = |e: tokio_postgres::Error| {
            DbError(format!("{}: {}", common::sqlstate(&e), common::message(&e)))
        };
        let messages = self.client.simple_query(sql).await.map_err(failed)?;
        let mut rows = Vec::new();
        let mut columns = 0;
        let mut is_query = false;
        let mut count = 0;
        for m in messages {
            match m {
                SimpleQueryMessage::RowDescription(d) => {
                    is_query = true;
                    columns = d.len();
                }
                SimpleQueryMessage::Row(r) => {
                    is_query = true;
                    columns = r.len();
                    rows.push(
                        (0..r.len())
                            .map(|i| {
                                r.get(i)
                                    .map(str::to_string)
                                    .unwrap_or_else(|| "NULL".into())
                            })
                            .collect(),
                    );
                }
                SimpleQueryMessage::CommandComplete(n) => count = n,
                _ => {}
            }
        }
        if !is_query {
            return Ok(DBOutput::StatementComplete(count));
        }
        // The simple protocol's row description carries types tokio-postgres does not
        // expose: describe the statement once more (extended protocol) for them.
        let statement = self.client.prepare(sql).await.map_err(|e| {
            DbError(format!(
                "describing the query for its column types: {}",
                failed(e)
            ))
        })?;
        let types: Vec<Column> = statement
            .columns()
            .iter()
            .map(|c| Column::of(c.type_()))
            .collect();
        if types.len() != columns {
            return Err(DbError(format!(
                "the query returned {columns} columns, its description {}",
                types.len()
            )));
        }
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}

fn slt_files() -> Vec<PathBuf> {
    let dir = common::tests_dir().join("slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    files
}

fn is_differential(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .next()
        .is_some_and(|l| l.trim() == "# differential")
}

pub(crate) async fn run_file(path: &Path, client: Client, label: &str) -> Result<(), String> {
    let mut db = Some(Db { client });
    let mut runner = Runner::new(move || {
        let db = db.take().expect("one connection per file");
        async move { Ok(db) }
    });
    runner.add_label(label);
    runner.with_column_validator(sqllogictest::strict_column_validator);
    if label == "switchyard" && std::env::var_os("SWITCHYARD_SLT_UPDATE").is_some() {
        return runner
            .update_test_file(
                path,
                " ",
                sqllogictest::default_validator,
                sqllogictest::default_normalizer,
                sqllogictest::strict_column_validator,
            )
            .await
            .map_err(|e| format!("{label}: updating {}: {e}", path.display()));
    }
    runner
        .run_file_async(path)
        .await
        .map_err(|e| format!("{label}: {}: {e}", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_files_through_switchyard_and_differential_against_postgres() {
    let h = Harness::start().await;
    let mut failures = Vec::new();
    let mut ran = 0;
    for file in slt_files() {
        if let Err(e) = run_file(&file, h.analyst().await, "switchyard").await {
            failures.push(e);
        }
        ran += 1;
        if is_differential(&file) {
            let direct = h.pg.direct("reference").await;
            if let Err(e) = run_file(&file, direct, "postgres").await {
                failures.push(e);
            }
            ran += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {ran} runs failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// The differential files again, with the datasets materialized: read from their
/// local copies, the answers are still PostgreSQL's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differential_slt_files_over_materialized_copies() {
    let h = Harness::start_materialized().await;
    let mut failures = Vec::new();
    let mut ran = 0;
    for file in slt_files().into_iter().filter(|f| is_differential(f)) {
        if let Err(e) = run_file(&file, h.analyst().await, "switchyard (materialized)").await {
            failures.push(e);
        }
        ran += 1;
    }
    assert!(ran >= 8, "{ran} differential files");
    assert!(
        failures.is_empty(),
        "{} of {ran} runs failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
