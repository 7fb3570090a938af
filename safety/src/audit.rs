//! The audit log: one JSON line per statement, hash-chained.
//!
//! Each record carries `prev` (the previous record's hash) and `hash` =
//! SHA-256(prev ‖ the record's canonical JSON without `hash`). [`verify`] recomputes
//! the chain, so an edited, dropped or reordered line breaks it at that line. A
//! side file `<log>.head` holds the last sequence number and hash, so a line cut
//! from the end is caught too (copy the head elsewhere for protection against an
//! attacker who can rewrite both files).
//!
//! Records are written with one `write` each as they happen, so a clean shutdown
//! (or a crash of Switchyard alone) loses none; `fsync` decides when they are also
//! forced to disk.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use switchyard_config::Fsync;

use crate::decision::StageResult;

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An error a statement ended with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorRecord {
    /// SQLSTATE.
    pub code: String,
    /// Message as the client saw it.
    pub message: String,
}

/// One statement's record (the chain fields are filled in by [`AuditLog::append`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AuditRecord {
    /// RFC 3339 time the statement arrived.
    pub time: String,
    /// Backend pid of the session.
    pub session: i32,
    /// Login name.
    pub user: String,
    /// The user's roles.
    pub roles: Vec<String>,
    /// Client address.
    pub client: String,
    /// `simple` or `extended`.
    pub protocol: String,
    /// Statement with literals replaced by `?`.
    pub fingerprint: String,
    /// SHA-256 of the statement text.
    pub statement_hash: String,
    /// User tables touched.
    pub tables: Vec<String>,
    /// Origins touched.
    pub origins: Vec<String>,
    /// Each stage's decision.
    pub stages: Vec<StageResult>,
    /// Warnings sent to the client.
    pub warnings: Vec<String>,
    /// `ok`, `denied` or `error`.
    pub outcome: String,
    /// Rows sent.
    pub rows: u64,
    /// Bytes of row data sent.
    pub bytes: u64,
    /// Microseconds from arrival to the last row (or the error). An integer: JSON
    /// floats do not always read back bit-for-bit, and the hash covers this field.
    pub duration_us: u64,
    /// The error, if any.
    pub error: Option<ErrorRecord>,
    /// A step-graph request (HTTP, MCP): its steps and what became of each.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestRecord>,
}

/// What a step-graph request asked for and what each step's check decided.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RequestRecord {
    /// The request's id (as in the response).
    pub id: String,
    /// Every step id, in request order.
    pub requested: Vec<String>,
    /// The step ids stripped as denied (`deny_policy: partial`).
    pub stripped: Vec<String>,
    /// Each step's decision.
    pub steps: Vec<StepRecord>,
    /// The merge statement's fingerprint, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merge: Option<String>,
}

/// One step of a request, as checked and run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StepRecord {
    /// The step's id.
    pub step_id: String,
    /// The origin it asked.
    pub database: String,
    /// Its query with literals replaced by `?`.
    pub fingerprint: String,
    /// Each stage's decision.
    pub stages: Vec<StageResult>,
    /// `ok`, `denied`, `stripped`, `error` or `skipped`.
    pub outcome: String,
    /// Rows it returned.
    pub rows: u64,
    /// Why it did not run, if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorRecord>,
}

struct State {
    file: File,
    head: PathBuf,
    prev: String,
    seq: u64,
    last_sync: Instant,
    synced_seq: Option<u64>,
}

impl State {
    /// The head file is written when records are synced: it marks how far the log
    /// was known to be on disk, so a cut below that point is detected.
    fn sync(&mut self) -> std::io::Result<()> {
        if self.synced_seq == Some(self.seq) {
            return Ok(());
        }
        self.file.sync_data()?;
        std::fs::write(&self.head, format!("{} {}\n", self.seq, self.prev))?;
        self.last_sync = Instant::now();
        self.synced_seq = Some(self.seq);
        Ok(())
    }
}

/// An append-only, hash-chained JSON-lines file.
pub struct AuditLog {
    state: Mutex<State>,
    fsync: Fsync,
    path: PathBuf,
    /// The last write error, until a write succeeds again.
    broken: Mutex<Option<(std::io::ErrorKind, String)>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .finish()
    }
}

fn head_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".head");
    PathBuf::from(p)
}

/// JSON with object keys sorted at every level: the bytes the hash covers.
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&map[k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(items) => {
            format!(
                "[{}]",
                items.iter().map(canonical).collect::<Vec<_>>().join(",")
            )
        }
        other => other.to_string(),
    }
}

fn chain_hash(prev: &str, body: &Value) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(canonical(body).as_bytes());
    hex::encode(h.finalize())
}

impl AuditLog {
    /// Opens (or creates) the log, continuing the chain of an existing file.
    pub fn open(path: &Path, fsync: Fsync) -> std::io::Result<AuditLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)?;
        let (prev, seq) = last_link(&mut file)?;
        Ok(AuditLog {
            state: Mutex::new(State {
                file,
                head: head_path(path),
                prev,
                seq,
                last_sync: Instant::now(),
                synced_seq: None,
            }),
            fsync,
            path: path.to_path_buf(),
            broken: Mutex::new(None),
        })
    }

    /// `Err` (kind, message) while the last append failed: the front door refuses
    /// statements then, since they could not be audited.
    pub fn health(&self) -> Result<(), (std::io::ErrorKind, String)> {
        match &*self.broken.lock().unwrap_or_else(|p| p.into_inner()) {
            None => Ok(()),
            Some(e) => Err(e.clone()),
        }
    }

    /// The fsync policy.
    pub fn fsync(&self) -> Fsync {
        self.fsync
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a record; returns its hash. Failing to write is reported, never hidden,
    /// and remembered (see [`AuditLog::health`]) until a later append succeeds.
    pub fn append(&self, record: &AuditRecord) -> std::io::Result<String> {
        let result = self.append_inner(record);
        let mut broken = self.broken.lock().unwrap_or_else(|p| p.into_inner());
        *broken = result.as_ref().err().map(|e| (e.kind(), e.to_string()));
        result
    }

    fn append_inner(&self, record: &AuditRecord) -> std::io::Result<String> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut body = serde_json::to_value(record).map_err(std::io::Error::other)?;
        let seq = state.seq + 1;
        let obj = body.as_object_mut().expect("a record is an object");
        obj.insert("seq".into(), Value::from(seq));
        obj.insert("prev".into(), Value::String(state.prev.clone()));
        let hash = chain_hash(&state.prev, &body);
        body.as_object_mut()
            .expect("a record is an object")
            .insert("hash".into(), Value::String(hash.clone()));
        let mut line = serde_json::to_string(&body).map_err(std::io::Error::other)?;
        line.push('\n');
        state.file.write_all(line.as_bytes())?;
        state.prev = hash.clone();
        state.seq = seq;
        let sync = match self.fsync {
            Fsync::Always => true,
            Fsync::Interval => state.last_sync.elapsed() >= Duration::from_secs(1),
            Fsync::Never => false,
        };
        if sync {
            state.sync()?;
        }
        Ok(hash)
    }

    /// Forces every record to disk and brings the head file up to date (at shutdown).
    pub fn sync(&self) -> std::io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.sync()
    }
}

/// The hash and sequence number of the file's last record (genesis for an empty file).
fn last_link(file: &mut File) -> std::io::Result<(String, u64)> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok((GENESIS.to_string(), 0));
    }
    // Records are small; the last 64 KiB hold the last one.
    let start = len.saturating_sub(64 * 1024);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = String::new();
    file.read_to_string(&mut tail)?;
    let last = tail
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    let v: Value = serde_json::from_str(last).map_err(|e| {
        std::io::Error::other(format!("the audit log's last line is not a record: {e}"))
    })?;
    let hash = v["hash"].as_str().unwrap_or(GENESIS).to_string();
    let seq = v["seq"].as_u64().unwrap_or(0);
    Ok((hash, seq))
}

/// Where and why a log fails verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub struct VerifyError {
    /// The log.
    pub file: String,
    /// 1-based line (0: the file as a whole).
    pub line: u64,
    /// What is wrong.
    pub reason: String,
}

/// Checks the whole chain; returns the number of records.
pub fn verify(path: &Path) -> Result<u64, VerifyError> {
    let fail = |line: u64, reason: String| VerifyError {
        file: path.display().to_string(),
        line,
        reason,
    };
    let file = File::open(path).map_err(|e| fail(0, format!("cannot open: {e}")))?;
    let mut prev = GENESIS.to_string();
    let mut count = 0u64;
    let mut hashes = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let n = i as u64 + 1;
        let line = line.map_err(|e| fail(n, format!("cannot read: {e}")))?;
        if line.trim().is_empty() {
            return Err(fail(n, "empty line inside the log".into()));
        }
        let mut v: Value =
            serde_json::from_str(&line).map_err(|e| fail(n, format!("not a JSON record: {e}")))?;
        let obj = v
            .as_object_mut()
            .ok_or_else(|| fail(n, "not a JSON object".into()))?;
        let hash = obj
            .remove("hash")
            .and_then(|h| h.as_str().map(str::to_string))
            .ok_or_else(|| fail(n, "no hash".into()))?;
        let seq = obj.get("seq").and_then(Value::as_u64);
        if seq != Some(count + 1) {
            return Err(fail(
                n,
                format!(
                    "sequence number {} where {} was expected: a record was dropped or moved",
                    seq.map_or("missing".into(), |s| s.to_string()),
                    count + 1
                ),
            ));
        }
        if obj.get("prev").and_then(Value::as_str) != Some(prev.as_str()) {
            return Err(fail(
                n,
                "prev does not match the previous record's hash: a record was dropped, moved or edited".into(),
            ));
        }
        if chain_hash(&prev, &v) != hash {
            return Err(fail(n, "hash mismatch: the record was edited".into()));
        }
        hashes.push(hash.clone());
        prev = hash;
        count += 1;
    }
    if let Ok(head) = std::fs::read_to_string(head_path(path)) {
        let mut parts = head.split_whitespace();
        let seq: Option<u64> = parts.next().and_then(|s| s.parse().ok());
        let hash = parts.next().map(str::to_string);
        let synced = match (seq, &hash) {
            (Some(0), _) => true,
            (Some(s), Some(h)) => hashes.get(s as usize - 1) == Some(h),
            _ => false,
        };
        if !synced {
            return Err(fail(
                count + 1,
                format!(
                    "the log holds {count} records, but record {} was synced with another hash or is missing: records were cut from the end or rewritten",
                    seq.map_or("?".into(), |s| s.to_string())
                ),
            ));
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(user: &str) -> AuditRecord {
        AuditRecord {
            time: "2026-11-23T00:00:00Z".into(),
            user: user.into(),
            fingerprint: "SELECT ?".into(),
            outcome: "ok".into(),
            ..Default::default()
        }
    }

    fn write_log(dir: &Path, n: usize) -> PathBuf {
        let path = dir.join("audit.jsonl");
        let log = AuditLog::open(&path, Fsync::Never).unwrap();
        for i in 0..n {
            log.append(&record(&format!("u{i}"))).unwrap();
        }
        log.sync().unwrap();
        path
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sy-audit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn rewrite(path: &Path, f: impl FnOnce(&mut Vec<String>)) {
        let mut lines: Vec<String> = std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        f(&mut lines);
        std::fs::write(path, lines.join("\n") + "\n").unwrap();
    }

    #[test]
    fn an_untouched_log_verifies_and_reopening_continues_the_chain() {
        let d = tmpdir("ok");
        let path = write_log(&d, 3);
        assert_eq!(verify(&path), Ok(3));
        let log = AuditLog::open(&path, Fsync::Always).unwrap();
        log.append(&record("again")).unwrap();
        assert_eq!(verify(&path), Ok(4));
    }

    #[test]
    fn an_edited_line_is_caught_at_that_line() {
        let d = tmpdir("edit");
        let path = write_log(&d, 4);
        rewrite(&path, |l| l[2] = l[2].replace("\"u2\"", "\"admin\""));
        let e = verify(&path).unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.reason.contains("edited"), "{e}");
    }

    #[test]
    fn dropped_reordered_and_cut_lines_are_caught() {
        let d = tmpdir("drop");
        let path = write_log(&d, 4);
        rewrite(&path, |l| {
            l.remove(1);
        });
        assert_eq!(verify(&path).unwrap_err().line, 2);

        let d = tmpdir("swap");
        let path = write_log(&d, 4);
        rewrite(&path, |l| l.swap(1, 2));
        assert_eq!(verify(&path).unwrap_err().line, 2);

        let d = tmpdir("cut");
        let path = write_log(&d, 4);
        rewrite(&path, |l| {
            l.pop();
        });
        let e = verify(&path).unwrap_err();
        assert!(e.reason.contains("cut from the end"), "{e}");

        // Records written after the last sync are fine as they are.
        let d = tmpdir("unsynced");
        let path = write_log(&d, 2);
        let log = AuditLog::open(&path, Fsync::Never).unwrap();
        log.append(&record("later")).unwrap();
        assert_eq!(verify(&path), Ok(3));
    }
}
