//! Results over the row cap, kept for `GET /v1/results/{request_id}`: in memory up
//! to a bound, spilled to an Arrow IPC file beyond it (so a large result never sits
//! whole in memory), readable only by the user who made the request, and deleted
//! by a reaper after `results_ttl`.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::arrow::record_batch::RecordBatch;
use switchyard_engine::SqlState;

use crate::error::{Kind, Result, StepError};

/// The most bytes one answer may have when the user has no `max_result_bytes`.
pub const RESULT_CEILING: u64 = 1024 * 1024 * 1024;

/// Bytes of a result kept in memory before it is spilled to disk.
pub const MEMORY_BOUND: u64 = 16 * 1024 * 1024;

/// Every kept result.
pub struct Scratchpads {
    dir: PathBuf,
    ttl: Duration,
    memory_bound: u64,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
}

struct Entry {
    user: String,
    created: Instant,
    schema: SchemaRef,
    rows: u64,
    store: Store,
}

enum Store {
    Memory(Vec<RecordBatch>),
    /// The file and each batch's row count, in order.
    File(PathBuf, Vec<usize>),
}

/// Rows of one page.
pub struct Page {
    /// The result's columns.
    pub schema: SchemaRef,
    /// The page's rows.
    pub batches: Vec<RecordBatch>,
    /// Whether rows follow this page.
    pub has_more: bool,
    /// Rows in the whole result.
    pub total: u64,
}

/// A result being written.
pub struct Writer {
    schema: SchemaRef,
    bound: u64,
    bytes: u64,
    rows: u64,
    memory: Vec<RecordBatch>,
    file: Option<(PathBuf, FileWriter<File>, Vec<usize>)>,
    path: PathBuf,
}

fn io(path: &Path, e: impl std::fmt::Display) -> StepError {
    StepError::new(
        Kind::Internal,
        SqlState::IO_ERROR,
        format!("scratchpad {}: {e}", path.display()),
    )
}

impl Writer {
    /// Adds a batch; past the memory bound everything so far goes to the file.
    pub fn push(&mut self, batch: RecordBatch) -> Result<()> {
        self.rows += batch.num_rows() as u64;
        self.bytes += switchyard_engine::guard::result_bytes(&batch);
        if self.file.is_none() && self.bytes > self.bound {
            let file = File::create(&self.path).map_err(|e| io(&self.path, e))?;
            let writer = FileWriter::try_new(file, &self.schema).map_err(|e| io(&self.path, e))?;
            self.file = Some((self.path.clone(), writer, Vec::new()));
            for b in std::mem::take(&mut self.memory) {
                self.write(b)?;
            }
        }
        if self.file.is_some() {
            self.write(batch)
        } else {
            self.memory.push(batch);
            Ok(())
        }
    }

    fn write(&mut self, batch: RecordBatch) -> Result<()> {
        let (path, writer, sizes) = self.file.as_mut().expect("spilling");
        writer.write(&batch).map_err(|e| io(path, e))?;
        sizes.push(batch.num_rows());
        Ok(())
    }

    /// Rows so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The first `n` rows (for the inline answer), from memory or the file.
    fn store(self) -> Result<(SchemaRef, u64, Store)> {
        Ok(match self.file {
            None => (self.schema, self.rows, Store::Memory(self.memory)),
            Some((path, mut writer, sizes)) => {
                writer.finish().map_err(|e| io(&path, e))?;
                (self.schema, self.rows, Store::File(path, sizes))
            }
        })
    }
}

impl Scratchpads {
    /// Results kept under `dir` (emptied now: what an earlier run kept is gone) for `ttl`.
    pub fn new(dir: PathBuf, ttl: Duration) -> Self {
        let _ = std::fs::remove_dir_all(&dir);
        Scratchpads {
            dir,
            ttl,
            memory_bound: MEMORY_BOUND,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// With another memory bound (tests).
    pub fn with_memory_bound(mut self, bytes: u64) -> Self {
        self.memory_bound = bytes;
        self
    }

    /// How long results are kept.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A writer for the result of request `id`.
    pub fn writer(&self, id: &str, schema: SchemaRef) -> Result<Writer> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
        Ok(Writer {
            schema,
            bound: self.memory_bound,
            bytes: 0,
            rows: 0,
            memory: Vec::new(),
            file: None,
            path: self.dir.join(format!("{id}.arrow")),
        })
    }

    /// Keeps a written result for `user`.
    pub fn keep(&self, id: &str, user: &str, writer: Writer) -> Result<()> {
        let (schema, rows, store) = writer.store()?;
        let entry = Entry {
            user: user.to_string(),
            created: Instant::now(),
            schema,
            rows,
            store,
        };
        self.lock().insert(id.to_string(), Arc::new(entry));
        Ok(())
    }

    /// Drops a writer's file without keeping it (the request failed).
    pub fn discard(&self, writer: Writer) {
        if let Some((path, _, _)) = writer.file {
            let _ = std::fs::remove_file(path);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Page `page` (1-based) of `size` rows of request `id`, for `user`; 404 for
    /// anyone else, and once the result has expired.
    pub fn page(&self, id: &str, user: &str, page: u64, size: u64) -> Result<Page> {
        let entry = self
            .lock()
            .get(id)
            .filter(|e| e.user == user && e.created.elapsed() < self.ttl)
            .cloned()
            .ok_or_else(|| {
                StepError::new(
                    Kind::NotFound,
                    SqlState::UNDEFINED_OBJECT,
                    format!("no result {id}: unknown, expired (results_ttl) or not yours"),
                )
            })?;
        let start = page.saturating_sub(1).saturating_mul(size);
        let end = start.saturating_add(size).min(entry.rows);
        let batches = match &entry.store {
            Store::Memory(batches) => slice(batches.iter().cloned(), start, end),
            Store::File(path, sizes) => {
                let file = File::open(path).map_err(|e| io(path, e))?;
                let mut reader = FileReader::try_new(file, None).map_err(|e| io(path, e))?;
                // Skip whole batches before the page without reading them.
                let mut first = 0usize;
                let mut offset = 0u64;
                while first < sizes.len() && offset + sizes[first] as u64 <= start {
                    offset += sizes[first] as u64;
                    first += 1;
                }
                reader.set_index(first).map_err(|e| io(path, e))?;
                let mut out = Vec::new();
                let mut at = offset;
                for batch in reader {
                    if at >= end {
                        break;
                    }
                    let batch = batch.map_err(|e| io(path, e))?;
                    at += batch.num_rows() as u64;
                    out.push(batch);
                }
                slice(out.into_iter(), start - offset, end - offset)
            }
        };
        Ok(Page {
            schema: Arc::clone(&entry.schema),
            batches,
            has_more: end < entry.rows,
            total: entry.rows,
        })
    }

    /// Deletes expired results; returns how many.
    pub fn reap(&self) -> usize {
        let expired: Vec<Arc<Entry>> = {
            let mut entries = self.lock();
            let ids: Vec<String> = entries
                .iter()
                .filter(|(_, e)| e.created.elapsed() >= self.ttl)
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| entries.remove(id)).collect()
        };
        for e in &expired {
            if let Store::File(path, _) = &e.store {
                let _ = std::fs::remove_file(path);
            }
        }
        expired.len()
    }

    /// Reaps in the background, a few times per `ttl`.
    pub fn spawn_reaper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let pads = Arc::downgrade(self);
        let every = (self.ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(pads) = pads.upgrade() else { return };
                let n = pads.reap();
                if n > 0 {
                    tracing::debug!(results = n, "expired results deleted");
                }
            }
        })
    }
}

/// Rows `start..end` of consecutive batches.
fn slice(batches: impl Iterator<Item = RecordBatch>, start: u64, end: u64) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    let mut at = 0u64;
    for b in batches {
        let n = b.num_rows() as u64;
        let (lo, hi) = (start.max(at), end.min(at + n));
        if lo < hi {
            out.push(b.slice((lo - at) as usize, (hi - lo) as usize));
        }
        at += n;
        if at >= end {
            break;
        }
    }
    out
}
