//! Results files: every benchmark adds its section to `bench/results/<date>.json`
//! (one file per day, sections replaced by later runs of the same benchmark), with
//! the machine it ran on.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};

/// Where results go: `$SWITCHYARD_BENCH_RESULTS` (set by bench/run) or bench/results.
fn results_dir() -> PathBuf {
    std::env::var_os("SWITCHYARD_BENCH_RESULTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results"))
}

/// Today's results file.
pub fn results_file() -> PathBuf {
    let date = chrono::Utc::now().format("%Y-%m-%d");
    results_dir().join(format!("{date}.json"))
}

/// Adds (or replaces) `section` in today's results file; returns the file.
pub fn record(section: &str, value: Value) -> Result<PathBuf> {
    let file = results_file();
    std::fs::create_dir_all(file.parent().context("results folder")?)?;
    let mut all: Map<String, Value> = match std::fs::read_to_string(&file) {
        Ok(text) => serde_json::from_str(&text).unwrap_or_default(),
        Err(_) => Map::new(),
    };
    all.insert("machine".into(), machine());
    all.insert(section.into(), value);
    std::fs::write(
        &file,
        serde_json::to_string_pretty(&Value::Object(all))? + "\n",
    )?;
    Ok(file)
}

/// What the figures were measured on.
fn machine() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let mem_gb = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| (kb / 1024.0 / 1024.0 * 10.0).round() / 10.0);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let command = |prog: &str, args: &[&str]| {
        std::process::Command::new(prog)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    json!({
        "cpu": cpu,
        "cores": cores,
        "memory_gb": mem_gb,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "postgres": std::env::var("SWITCHYARD_BENCH_PG_VERSION").unwrap_or_default(),
        "switchyard_commit": command("git", &["rev-parse", "--short", "HEAD"]),
        "measured_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}
