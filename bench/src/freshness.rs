//! `freshness` (P4 of the materialize issue): how soon a row committed at the
//! origin is visible through Switchyard in a live copy. 1000 single-row commits
//! one after another, each timed from its COMMIT returning to the first read of
//! the copy that shows it; then 10 000-row transactions, each timed until all of
//! it is visible (and checked never to show part of it).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::common::{connect, origin, Served};

/// p50 / p95 / max of `samples`, in ms.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    let n = samples.len();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (
        ms(samples[n / 2]),
        ms(samples[(n * 95 / 100).min(n - 1)]),
        ms(samples[n - 1]),
    )
}

/// Runs the freshness benchmark; its figures as JSON.
pub async fn freshness(commits: usize, big: usize) -> Result<serde_json::Value> {
    let o = origin()?;
    let direct = connect(&o.host, o.port, &o.user, &o.password, "sales").await?;
    direct
        .batch_execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
              WHERE slot_name = 'switchyard_copies_fresh' AND NOT active;
             DROP PUBLICATION IF EXISTS switchyard_copies_fresh;
             DROP TABLE IF EXISTS sales.bench_fresh;
             CREATE TABLE sales.bench_fresh (id bigint PRIMARY KEY, batch int, note text, at timestamptz DEFAULT now());",
        )
        .await?;
    let dir = tempfile::tempdir()?;
    let served = Served::start(
        dir.path(),
        &format!(
            r#"users: [ {{ name: bench, password: bench, roles: [reader] }} ]
roles: {{ reader: {{ allow: ["*"] }} }}
origins:
  sales: {{ kind: postgres, url: "postgres://{user}:{pw}@{host}:{pgport}/sales?sslmode=disable" }}
datasets:
  copies.fresh: {{ origin: sales, table: sales.bench_fresh, mode: materialize, live: true }}
local: {{ path: local.db }}
audit: {{ path: audit.jsonl }}
"#,
            user = o.user,
            pw = o.password,
            host = o.host,
            pgport = o.port,
        ),
    )
    .await?;
    let proxy = connect("127.0.0.1", served.port, "bench", "bench", "switchyard").await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state = proxy
            .query_one(
                "SELECT state FROM switchyard.datasets WHERE name = 'copies.fresh'",
                &[],
            )
            .await?
            .get::<_, String>(0);
        if state == "streaming" {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the live copy did not start: {state}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let visible = proxy
        .prepare("SELECT count(*) FROM copies.fresh WHERE batch = $1")
        .await?;

    // Single-row commits.
    let mut single = Vec::with_capacity(commits);
    for i in 0..commits {
        direct
            .execute(
                "INSERT INTO sales.bench_fresh (id, batch, note) VALUES ($1, $2, 'one')",
                &[&(i as i64), &(i as i32)],
            )
            .await?;
        let committed = Instant::now();
        loop {
            let n: i64 = proxy.query_one(&visible, &[&(i as i32)]).await?.get(0);
            if n == 1 {
                break;
            }
            anyhow::ensure!(
                committed.elapsed() < Duration::from_secs(30),
                "row {i} never arrived"
            );
        }
        single.push(committed.elapsed());
    }

    // Large transactions: all of one or none of it.
    let mut large = Vec::with_capacity(big);
    let mut partial = 0;
    for b in 0..big {
        let batch = 1_000_000 + b as i32;
        let first = 10_000_000 + b as i64 * 10_000;
        direct
            .execute(
                "INSERT INTO sales.bench_fresh (id, batch, note)
                 SELECT g, $1, 'bulk' FROM generate_series($2::bigint, $2::bigint + 9999) g",
                &[&batch, &first],
            )
            .await?;
        let committed = Instant::now();
        loop {
            let n: i64 = proxy.query_one(&visible, &[&batch]).await?.get(0);
            if n == 10_000 {
                break;
            }
            if n != 0 {
                partial += 1;
            }
            anyhow::ensure!(
                committed.elapsed() < Duration::from_secs(60),
                "batch {b} never arrived"
            );
        }
        large.push(committed.elapsed());
    }
    let lag: Option<i64> = proxy
        .query_one(
            "SELECT lag_ms FROM switchyard.datasets WHERE name = 'copies.fresh'",
            &[],
        )
        .await?
        .get(0);
    let rss = served.peak_rss_kb().context("switchyard's memory")?;
    drop(served);
    // The slot is dropped by the next run (its walsender may not have exited yet).
    let _ = direct
        .batch_execute("DROP TABLE sales.bench_fresh CASCADE")
        .await;

    let (s50, s95, smax) = percentiles(single);
    let (l50, l95, lmax) = percentiles(large);
    println!("Freshness: a commit at the origin until a read through Switchyard sees it (live copy, local store)");
    println!();
    println!("| workload | runs | p50 | p95 | max |");
    println!("|---|---:|---:|---:|---:|");
    println!("| single-row commit | {commits} | {s50:.1} ms | {s95:.1} ms | {smax:.1} ms |");
    println!("| 10 000-row transaction | {big} | {l50:.1} ms | {l95:.1} ms | {lmax:.1} ms |");
    println!();
    println!(
        "reads that saw part of a transaction: {partial}; lag_ms at the end: {lag:?}; switchyard peak RSS {:.0} MB",
        rss as f64 / 1024.0
    );
    Ok(serde_json::json!({
        "single_row": { "runs": commits, "p50_ms": s50, "p95_ms": s95, "max_ms": smax },
        "ten_thousand_rows": { "runs": big, "p50_ms": l50, "p95_ms": l95, "max_ms": lmax },
        "partial_reads": partial,
        "peak_rss_mb": rss as f64 / 1024.0,
    }))
}
