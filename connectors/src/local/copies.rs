//! Materialized copies in the local store: each copy is one SQLite table, and the
//! catalog table `_switchyard_copies` says which table serves which dataset, with
//! the copy's Arrow schema, what it was copied from and when.
//!
//! A copy's rows go into a new table in chunks of [`CHUNK_ROWS`], each its own
//! short transaction (so other writers of the store wait for a chunk, not for a
//! whole copy); no reader sees that table until the last transaction swaps the
//! catalog row and drops the previous copy. Readers see the old copy or the new
//! one, never half of one; a crash mid-copy leaves the old copy as it was, and the
//! unfinished table is dropped at the next start ([`LocalStore::drop_orphans`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use super::codec::{schema_bytes, schema_from_bytes, Codec, Encoded};
use super::LocalStore;
use crate::sql::quote_ident;
use crate::{ConnectorError, Result};

/// Tables whose name starts with this belong to Switchyard, not to `local.*`.
pub const RESERVED_PREFIX: &str = "_switchyard";

/// The catalog of copies.
pub(crate) const CATALOG: &str = "_switchyard_copies";

/// Bumped when the stored encoding changes: older copies are then taken again.
const FORMAT: i64 = 1;

/// Rows per transaction while a copy is written.
pub const CHUNK_ROWS: u64 = 50_000;

/// One dataset's current copy.
#[derive(Debug, Clone)]
pub struct CopyInfo {
    /// `schema.name`.
    pub dataset: String,
    /// What it was copied from ([`crate::local::source_key`]).
    pub source: String,
    /// The SQLite table holding the rows.
    pub table: String,
    /// The rows' Arrow schema, as the origin gave it.
    pub schema: SchemaRef,
    /// Rows in the copy.
    pub rows: u64,
    /// When the copy was committed (RFC 3339, UTC).
    pub copied_at: String,
    /// Live copies: the change feed's position the copy stands at.
    pub position: Option<String>,
    /// Live copies: the columns changes find rows by.
    pub key: Vec<String>,
}

pub(crate) fn store_error(e: rusqlite::Error) -> ConnectorError {
    let full = matches!(
        &e,
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull
    );
    ConnectorError::LocalStore {
        full,
        message: e.to_string(),
    }
}

pub(crate) fn arrow_error(e: datafusion::arrow::error::ArrowError) -> ConnectorError {
    ConnectorError::LocalStore {
        full: false,
        message: e.to_string(),
    }
}

impl LocalStore {
    /// A read-write connection with the store's size limit applied.
    pub(crate) fn writer(&self) -> Result<rusqlite::Connection> {
        let conn = rusqlite::Connection::open(&self.path).map_err(store_error)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(store_error)?;
        if let Some(max) = self.max_size {
            let page: i64 = conn
                .pragma_query_value(None, "page_size", |r| r.get(0))
                .map_err(store_error)?;
            let pages = (max as i64 / page.max(512)).max(1);
            conn.pragma_update(None, "max_page_count", pages)
                .map_err(store_error)?;
        }
        Ok(conn)
    }

    pub(crate) fn ensure_catalog(conn: &rusqlite::Connection) -> Result<()> {
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {CATALOG} (
                dataset TEXT PRIMARY KEY,
                source TEXT NOT NULL,
                table_name TEXT NOT NULL,
                arrow_schema BLOB NOT NULL,
                rows INTEGER NOT NULL,
                copied_at TEXT NOT NULL,
                format INTEGER NOT NULL,
                position TEXT,
                key_columns TEXT
            )"
        ))
        .map_err(store_error)?;
        // Catalogs written before live copies lack the feed's columns.
        let has_position: bool = conn
            .query_row(
                &format!("SELECT count(*) > 0 FROM pragma_table_info('{CATALOG}') WHERE name = 'position'"),
                [],
                |r| r.get(0),
            )
            .map_err(store_error)?;
        if !has_position {
            conn.execute_batch(&format!(
                "ALTER TABLE {CATALOG} ADD COLUMN position TEXT;
                 ALTER TABLE {CATALOG} ADD COLUMN key_columns TEXT"
            ))
            .map_err(store_error)?;
        }
        Ok(())
    }

    /// Every copy in the store (copies of an older format are left out: they are
    /// taken again).
    pub fn copies(&self) -> Result<Vec<CopyInfo>> {
        let conn = self.writer()?;
        Self::ensure_catalog(&conn)?;
        read_copies(&conn, None)
    }

    /// The current copy of `dataset`, if there is one.
    pub fn copy_info(&self, dataset: &str) -> Result<Option<CopyInfo>> {
        let conn = super::open_readonly_store(&self.path)?;
        copy_info(&conn, dataset)
    }

    /// Drops copy tables no catalog row names (copies cut short by a crash).
    pub fn drop_orphans(&self) -> Result<usize> {
        let conn = self.writer()?;
        Self::ensure_catalog(&conn)?;
        let orphans: Vec<String> = {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT name FROM sqlite_master WHERE type = 'table'
                       AND name LIKE '\\_switchyard\\_copy\\_%' ESCAPE '\\'
                       AND name NOT IN (SELECT table_name FROM {CATALOG})"
                ))
                .map_err(store_error)?;
            let names = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(store_error)?;
            names
                .collect::<std::result::Result<_, _>>()
                .map_err(store_error)?
        };
        for name in &orphans {
            conn.execute_batch(&format!("DROP TABLE IF EXISTS {}", quote_ident(name)))
                .map_err(store_error)?;
        }
        Ok(orphans.len())
    }

    /// Drops `dataset`'s copy (its dataset left the config, or its source changed).
    pub fn drop_copy(&self, dataset: &str) -> Result<()> {
        let mut conn = self.writer()?;
        Self::ensure_catalog(&conn)?;
        let tx = conn.transaction().map_err(store_error)?;
        if let Some(info) = read_copies(&tx, Some(dataset))?.into_iter().next() {
            tx.execute_batch(&format!(
                "DROP TABLE IF EXISTS {}",
                quote_ident(&info.table)
            ))
            .map_err(store_error)?;
        }
        tx.execute(
            &format!("DELETE FROM {CATALOG} WHERE dataset = ?1"),
            [dataset],
        )
        .map_err(store_error)?;
        tx.commit().map_err(store_error)
    }

    /// Starts a new copy of `dataset`, read from `source`, with the rows' `schema`;
    /// `progress` counts the rows written so far.
    pub fn begin_copy(
        &self,
        dataset: &str,
        source: &str,
        schema: SchemaRef,
        progress: Arc<AtomicU64>,
    ) -> Result<CopyWriter> {
        let conn = self.writer()?;
        Self::ensure_catalog(&conn)?;
        let generation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let table = format!(
            "{RESERVED_PREFIX}_copy_{}_{generation}",
            dataset.replace('.', "__")
        );
        conn.execute_batch("BEGIN IMMEDIATE").map_err(store_error)?;
        let columns: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| {
                format!(
                    "{} {}",
                    quote_ident(f.name()),
                    Codec::of(f.data_type()).sql_type()
                )
            })
            .collect();
        let writer = CopyWriter {
            conn,
            open: true,
            dataset: dataset.to_string(),
            source: source.to_string(),
            insert: format!(
                "INSERT INTO {} VALUES ({})",
                quote_ident(&table),
                (1..=schema.fields().len())
                    .map(|i| format!("?{i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            table,
            schema,
            rows: 0,
            uncommitted: 0,
            progress,
            feed: None,
            unique_key: false,
        };
        writer
            .conn
            .execute_batch(&format!(
                "CREATE TABLE {} ({})",
                quote_ident(&writer.table),
                columns.join(", ")
            ))
            .map_err(store_error)?;
        Ok(writer)
    }
}

fn read_copies(conn: &rusqlite::Connection, only: Option<&str>) -> Result<Vec<CopyInfo>> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT dataset, source, table_name, arrow_schema, rows, copied_at, position, key_columns FROM {CATALOG}
             WHERE format = {FORMAT} AND (?1 IS NULL OR dataset = ?1) ORDER BY dataset"
        ))
        .map_err(store_error)?;
    let rows = stmt
        .query_map([only], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Vec<u8>>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, Option<String>>(7)?,
            ))
        })
        .map_err(store_error)?;
    let mut out = Vec::new();
    for row in rows {
        let (dataset, source, table, schema, rows, copied_at, position, key) =
            row.map_err(store_error)?;
        out.push(CopyInfo {
            dataset,
            source,
            table,
            schema: schema_from_bytes(&schema).map_err(arrow_error)?,
            rows: rows as u64,
            copied_at,
            position,
            key: key
                .and_then(|k| serde_json::from_str(&k).ok())
                .unwrap_or_default(),
        });
    }
    Ok(out)
}

/// The current copy of `dataset` as `conn` sees it (inside its read transaction).
pub(crate) fn copy_info(conn: &rusqlite::Connection, dataset: &str) -> Result<Option<CopyInfo>> {
    let exists: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [CATALOG],
            |r| r.get(0),
        )
        .map_err(store_error)?;
    if !exists {
        return Ok(None);
    }
    Ok(read_copies(conn, Some(dataset))?.into_iter().next())
}

/// A copy being written: rows go in with [`CopyWriter::write`]; nothing is visible
/// until [`CopyWriter::commit`], and dropping the writer leaves the old copy.
pub struct CopyWriter {
    conn: rusqlite::Connection,
    open: bool,
    dataset: String,
    source: String,
    table: String,
    schema: SchemaRef,
    insert: String,
    rows: u64,
    uncommitted: u64,
    progress: Arc<AtomicU64>,
    /// Live copies: the feed's position and key.
    feed: Option<(String, Vec<String>)>,
    /// Sync copies: the key is unique (a write of a held key fails as at the origin).
    unique_key: bool,
}

impl std::fmt::Debug for CopyWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyWriter")
            .field("dataset", &self.dataset)
            .field("table", &self.table)
            .field("rows", &self.rows)
            .finish()
    }
}

impl CopyWriter {
    /// Appends a batch of rows (in the copy's schema).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_columns() != self.schema.fields().len() {
            return Err(ConnectorError::LocalStore {
                full: false,
                message: format!(
                    "copy of {}: a batch of {} columns for {}",
                    self.dataset,
                    batch.num_columns(),
                    self.schema.fields().len()
                ),
            });
        }
        let columns = batch
            .columns()
            .iter()
            .map(Encoded::new)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(arrow_error)?;
        let mut stmt = self
            .conn
            .prepare_cached(&self.insert)
            .map_err(store_error)?;
        for row in 0..batch.num_rows() {
            for (i, c) in columns.iter().enumerate() {
                let v = c.value(row).map_err(arrow_error)?;
                stmt.raw_bind_parameter(i + 1, v).map_err(store_error)?;
            }
            stmt.raw_execute().map_err(store_error)?;
        }
        drop(stmt);
        self.rows += batch.num_rows() as u64;
        self.progress
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        self.uncommitted += batch.num_rows() as u64;
        if self.uncommitted >= CHUNK_ROWS {
            self.conn
                .execute_batch("COMMIT; BEGIN IMMEDIATE")
                .map_err(store_error)?;
            self.uncommitted = 0;
        }
        Ok(())
    }

    /// Makes this a live copy: it stands at the change feed's `position`, and
    /// changes find its rows by the `key` columns (indexed at commit).
    pub fn follow(&mut self, position: &str, key: &[String]) {
        self.feed = Some((position.to_string(), key.to_vec()));
    }

    /// Makes the key's index unique (sync copies, whose key is the origin's
    /// primary key or replica-identity index).
    pub fn unique_key(&mut self) {
        self.unique_key = true;
    }

    /// Makes the copy the dataset's current one (the previous copy is dropped in
    /// the same transaction).
    pub fn commit(mut self) -> Result<CopyInfo> {
        let previous = read_copies(&self.conn, Some(&self.dataset))?;
        let copied_at = now_rfc3339();
        let schema = schema_bytes(&self.schema).map_err(arrow_error)?;
        let (position, key) = match &self.feed {
            Some((p, k)) => (Some(p.clone()), k.clone()),
            None => (None, Vec::new()),
        };
        let key_json = (!key.is_empty()).then(|| serde_json::to_string(&key).unwrap_or_default());
        let conn = &self.conn;
        let run = || -> Result<()> {
            if !key.is_empty() {
                conn.execute_batch(&format!(
                    "CREATE {}INDEX {} ON {} ({})",
                    if self.unique_key { "UNIQUE " } else { "" },
                    quote_ident(&format!("{}_key", self.table)),
                    quote_ident(&self.table),
                    key.iter()
                        .map(|k| quote_ident(k))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .map_err(store_error)?;
            }
            conn.execute(
                &format!(
                    "INSERT INTO {CATALOG} (dataset, source, table_name, arrow_schema, rows, copied_at, format, position, key_columns)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, {FORMAT}, ?7, ?8)
                     ON CONFLICT (dataset) DO UPDATE SET source = excluded.source,
                       table_name = excluded.table_name, arrow_schema = excluded.arrow_schema,
                       rows = excluded.rows, copied_at = excluded.copied_at, format = excluded.format,
                       position = excluded.position, key_columns = excluded.key_columns"
                ),
                rusqlite::params![
                    self.dataset,
                    self.source,
                    self.table,
                    schema,
                    self.rows as i64,
                    copied_at,
                    position,
                    key_json
                ],
            )
            .map_err(store_error)?;
            for old in &previous {
                conn.execute_batch(&format!("DROP TABLE IF EXISTS {}", quote_ident(&old.table)))
                    .map_err(store_error)?;
            }
            conn.execute_batch("COMMIT").map_err(store_error)
        };
        run()?;
        self.open = false;
        Ok(CopyInfo {
            dataset: self.dataset.clone(),
            source: self.source.clone(),
            table: self.table.clone(),
            schema: Arc::clone(&self.schema),
            rows: self.rows,
            copied_at,
            position,
            key,
        })
    }
}

impl Drop for CopyWriter {
    fn drop(&mut self) {
        if self.open {
            // Nothing of an unfinished copy stays (a crash here leaves an orphan
            // table for `drop_orphans`).
            let _ = self.conn.execute_batch("ROLLBACK");
            let drop = format!("DROP TABLE IF EXISTS {}", quote_ident(&self.table));
            if let Err(e) = self.conn.execute_batch(&drop) {
                tracing::warn!(dataset = %self.dataset, error = %e, "dropping an unfinished copy");
            }
        }
    }
}

/// Now as RFC 3339 in UTC, to the microsecond.
fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
