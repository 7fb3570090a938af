//! `stream`: a large result streamed to the client, direct vs through Switchyard,
//! with Switchyard's peak memory.

use std::time::{Duration, Instant};

use anyhow::Result;
use tokio_postgres::Client;

use crate::common::{connect, origin, Served};

/// psql reading `sql` into /dev/null, with FETCH_COUNT (a cursor) unless 0 (one simple
/// query, which psql holds whole); the elapsed time.
fn psql_stream(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
    db: &str,
    sql: &str,
    fetch_count: u32,
) -> Result<Duration> {
    let t = Instant::now();
    let out = std::process::Command::new("psql")
        .env("PGPASSWORD", password)
        .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-v"])
        .arg(format!("FETCH_COUNT={fetch_count}"))
        .args([
            "-h",
            host,
            "-p",
            &port.to_string(),
            "-U",
            user,
            "-d",
            db,
            "-c",
            sql,
        ])
        .stdout(std::process::Stdio::null())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(t.elapsed())
}

/// Rows of `sql` read in binary format (extended protocol), streamed; the elapsed time.
async fn binary_stream(client: &Client, sql: &str, expect: u64) -> Result<Duration> {
    use futures::TryStreamExt;
    let t = Instant::now();
    let rows = client.query_raw(sql, Vec::<i32>::new()).await?;
    futures::pin_mut!(rows);
    let mut n = 0u64;
    while let Some(row) = rows.try_next().await? {
        let _: i64 = row.get(0);
        n += 1;
    }
    anyhow::ensure!(n == expect, "{n} rows instead of {expect}");
    Ok(t.elapsed())
}

/// Runs the streaming benchmark; its figures as JSON.
pub async fn stream(sizes: Vec<u64>) -> Result<serde_json::Value> {
    let o = origin()?;
    let max = sizes.iter().copied().max().unwrap_or(0);
    let direct = connect(&o.host, o.port, &o.user, &o.password, "sales").await?;
    let have: i64 = direct
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'bench_stream'",
            &[],
        )
        .await?
        .get(0);
    if have == 0 {
        let t = Instant::now();
        direct
            .batch_execute(&format!(
                "CREATE TABLE sales.bench_stream AS SELECT i::bigint AS id, i * 1.5::float8 AS v, \
                 md5(i::text) AS t, timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second' AS ts \
                 FROM generate_series(1, {max}) AS g(i)"
            ))
            .await?;
        println!("created {max} rows in {:.1} s", t.elapsed().as_secs_f64());
    }
    let dir = tempfile::tempdir()?;
    let config = format!(
        r#"users:
  - {{ name: plain, password: pw, roles: [reader] }}
roles:
  reader: {{ allow: ["sales.*"] }}
origins:
  sales: {{ kind: postgres, url: "postgres://{user}:{pw}@{host}:{pgport}/sales?sslmode=disable" }}
datasets:
  sales: {{ origin: sales, tables: [sales.bench_stream] }}
audit: {{ path: "{audit}" }}
"#,
        user = o.user,
        pw = o.password,
        host = o.host,
        pgport = o.port,
        audit = dir.path().join("audit.jsonl").display(),
    );
    println!("P2 streaming: N rows × 4 columns (bigint, float8, text, timestamptz), direct vs through Switchyard");
    println!();
    println!("| rows | format | direct | Switchyard | ratio | Switchyard peak RSS |");
    println!("|---:|---|---:|---:|---:|---:|");
    let mut figures = Vec::new();
    for n in sizes {
        let sql = format!("SELECT id, v, t, ts FROM sales.bench_stream WHERE id <= {n}");
        for (key, format) in [
            ("text_cursor", "text (psql, FETCH_COUNT 10000: a cursor)"),
            ("text_simple", "text (psql, one simple query)"),
            ("binary", "binary (tokio-postgres, extended)"),
        ] {
            // A fresh server per measurement: peak RSS only grows.
            let served = Served::start(dir.path(), &config).await?;
            let port = served.port;
            let (d, s) = if format.starts_with("text") {
                let fetch = if format.contains("cursor") { 10_000 } else { 0 };
                let d = psql_stream(&o.host, o.port, &o.user, &o.password, "sales", &sql, fetch)?;
                let s = psql_stream("127.0.0.1", port, "plain", "pw", "switchyard", &sql, fetch)?;
                (d, s)
            } else {
                let proxied = connect("127.0.0.1", port, "plain", "pw", "switchyard").await?;
                let d = binary_stream(&direct, &sql, n).await?;
                let s = binary_stream(&proxied, &sql, n).await?;
                (d, s)
            };
            let rss = served.peak_rss_kb()?;
            drop(served);
            let ratio = s.as_secs_f64() / d.as_secs_f64();
            println!(
                "| {n} | {format} | {:.2} s | {:.2} s | {ratio:.2}× | {:.0} MB |",
                d.as_secs_f64(),
                s.as_secs_f64(),
                rss as f64 / 1024.0
            );
            figures.push(serde_json::json!({
                "rows": n,
                "format": key,
                "direct_s": d.as_secs_f64(),
                "switchyard_s": s.as_secs_f64(),
                "ratio": ratio,
                "switchyard_peak_rss_mb": rss as f64 / 1024.0,
            }));
        }
    }
    println!();
    Ok(serde_json::json!({ "runs": figures }))
}
