//! `snapshot`: taking a materialized copy (`switchyard materialize`, release
//! binary) against `COPY (query) TO STDOUT` of the same rows straight from
//! PostgreSQL, with the copying process's peak memory.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;

use crate::common::{connect, origin, peak_rss_kb};

/// Bytes of `COPY (sql) TO STDOUT`, read to the end; the elapsed time.
async fn copy_out(client: &tokio_postgres::Client, sql: &str) -> Result<(Duration, u64)> {
    let t = Instant::now();
    let stream = client.copy_out(&format!("COPY ({sql}) TO STDOUT")).await?;
    futures::pin_mut!(stream);
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        bytes += chunk?.len() as u64;
    }
    Ok((t.elapsed(), bytes))
}

/// Runs `switchyard materialize` on `config`; elapsed time and peak RSS (kB, the
/// high-water mark sampled every 20 ms until the process ends).
fn materialize(config: &std::path::Path) -> Result<(Duration, u64)> {
    let bin = std::env::current_exe()?
        .parent()
        .context("bench binary folder")?
        .join("switchyard");
    let t = Instant::now();
    let mut child = std::process::Command::new(&bin)
        .args(["materialize", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut peak = 0;
    let status = loop {
        if let Ok(kb) = peak_rss_kb(child.id()) {
            peak = peak.max(kb);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = t.elapsed();
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        anyhow::bail!("switchyard materialize failed: {err}");
    }
    Ok((elapsed, peak))
}

/// Runs the snapshot benchmark over `sizes` rows of sales.bench_stream (created by
/// `stream` when missing); its figures as JSON.
pub async fn snapshot(sizes: Vec<u64>) -> Result<serde_json::Value> {
    let o = origin()?;
    let max = sizes.iter().copied().max().unwrap_or(0);
    let direct = connect(&o.host, o.port, &o.user, &o.password, "sales").await?;
    let have: i64 = direct
        .query_one("SELECT count(*) FROM sales.bench_stream", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or(0);
    if (have as u64) < max {
        direct
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS sales.bench_stream; \
                 CREATE TABLE sales.bench_stream AS SELECT i::bigint AS id, i * 1.5::float8 AS v, \
                 md5(i::text) AS t, timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second' AS ts \
                 FROM generate_series(1, {max}) AS g(i)"
            ))
            .await?;
    }
    println!("Snapshot: N rows × 4 columns (bigint, float8, text, timestamptz) copied into the local store, vs COPY TO STDOUT direct");
    println!();
    println!("| rows | COPY TO STDOUT | switchyard materialize | ratio | rows/s | peak RSS |");
    println!("|---:|---:|---:|---:|---:|---:|");
    let mut figures = Vec::new();
    for n in sizes {
        let dir = tempfile::tempdir()?;
        let sql = format!("SELECT id, v, t, ts FROM sales.bench_stream WHERE id <= {n}");
        let config = dir.path().join("switchyard.yaml");
        std::fs::write(
            &config,
            format!(
                r#"users: [ {{ name: bench, password: bench, roles: [] }} ]
origins:
  sales: {{ kind: postgres, url: "postgres://{user}:{pw}@{host}:{pgport}/sales?sslmode=disable" }}
datasets:
  copies.stream: {{ origin: sales, query: "{sql}", mode: materialize }}
local: {{ path: local.db }}
audit: {{ path: audit.jsonl }}
"#,
                user = o.user,
                pw = o.password,
                host = o.host,
                pgport = o.port,
            ),
        )?;
        let (d, bytes) = copy_out(&direct, &sql).await?;
        let (s, rss) = materialize(&config)?;
        let ratio = s.as_secs_f64() / d.as_secs_f64();
        let rate = n as f64 / s.as_secs_f64();
        println!(
            "| {n} | {:.2} s ({:.0} MB) | {:.2} s | {ratio:.2}× | {rate:.0} | {:.0} MB |",
            d.as_secs_f64(),
            bytes as f64 / 1e6,
            s.as_secs_f64(),
            rss as f64 / 1024.0
        );
        figures.push(serde_json::json!({
            "rows": n,
            "copy_to_stdout_s": d.as_secs_f64(),
            "materialize_s": s.as_secs_f64(),
            "ratio": ratio,
            "rows_per_s": rate,
            "peak_rss_mb": rss as f64 / 1024.0,
        }));
    }
    println!();
    Ok(serde_json::json!({ "runs": figures }))
}
