//! Runs the `.slt` files in `tests/slt/` through Switchyard. Files whose first line
//! is `# differential` also run directly against the reference PostgreSQL database
//! (every origin's data in one place) and must pass there too: same answers.

use std::path::{Path, PathBuf};

use crate::common;
use crate::common::Harness;
use async_trait::async_trait;
use sqllogictest::{DBOutput, DefaultColumnType, Runner};
use tokio_postgres::{Client, SimpleQueryMessage};

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
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DbError> {
        let messages =
            self.client.simple_query(sql).await.map_err(|e| {
                DbError(format!("{}: {}", common::sqlstate(&e), common::message(&e)))
            })?;
        let mut rows = Vec::new();
        let mut columns = 0;
        let mut is_query = false;
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
                _ => {}
            }
        }
        if is_query {
            Ok(DBOutput::Rows {
                types: vec![DefaultColumnType::Any; columns],
                rows,
            })
        } else {
            Ok(DBOutput::StatementComplete(0))
        }
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

async fn run_file(path: &Path, client: Client, label: &str) -> Result<(), String> {
    let mut db = Some(Db { client });
    let mut runner = Runner::new(move || {
        let db = db.take().expect("one connection per file");
        async move { Ok(db) }
    });
    runner.add_label(label);
    runner.with_column_validator(|_, _| true);
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
