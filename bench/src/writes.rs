//! `writes` (issue 16): what a write costs through Switchyard. Single-row INSERTs,
//! prepared and run one after another by one client (each its own transaction),
//! timed direct to PostgreSQL and through Switchyard; then one 10 000-row
//! multi-row INSERT each way. Ratios are Switchyard's time over direct.

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::common::{connect, origin, Served};

/// p50 / p95 of `samples`, in ms.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let n = samples.len();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(samples[n / 2]), ms(samples[(n * 95 / 100).min(n - 1)]))
}

/// Runs the write benchmark; its figures as JSON.
pub async fn writes(inserts: usize) -> Result<serde_json::Value> {
    let o = origin()?;
    let direct = connect(&o.host, o.port, &o.user, &o.password, "sales").await?;
    direct
        .batch_execute(
            "DROP TABLE IF EXISTS sales.bench_writes;
             CREATE TABLE sales.bench_writes (id bigint PRIMARY KEY, note text, amount numeric(10,2));",
        )
        .await?;
    let dir = tempfile::tempdir()?;
    let served = Served::start(
        dir.path(),
        &format!(
            r#"users: [ {{ name: bench, password: bench, roles: [writer] }} ]
roles: {{ writer: {{ grants: [{{ tables: ["sales.*"], privileges: [select, insert, update, delete] }}] }} }}
origins:
  sales: {{ kind: postgres, url: "postgres://{user}:{pw}@{host}:{pgport}/sales?sslmode=disable" }}
datasets:
  sales: {{ origin: sales, tables: [sales.bench_writes] }}
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
    let sql = "INSERT INTO sales.bench_writes (id, note, amount) VALUES ($1, 'row', 1.50)";
    let mut figures = serde_json::Map::new();
    let mut p50s = Vec::new();
    for (name, client, base) in [("direct", &direct, 0i64), ("switchyard", &proxy, 1_000_000)] {
        let statement = client.prepare(sql).await?;
        // Warm-up: connections, plans, caches.
        for i in 0..50 {
            client.execute(&statement, &[&(base + 900_000 + i)]).await?;
        }
        let mut samples = Vec::with_capacity(inserts);
        for i in 0..inserts as i64 {
            let t = Instant::now();
            client.execute(&statement, &[&(base + i)]).await?;
            samples.push(t.elapsed());
        }
        let (p50, p95) = percentiles(samples);
        println!("single-row INSERT {name}: p50 {p50:.3} ms, p95 {p95:.3} ms");
        figures.insert(
            format!("insert_{name}"),
            serde_json::json!({ "p50_ms": p50, "p95_ms": p95, "inserts": inserts }),
        );
        p50s.push(p50);
    }
    let ratio = p50s[1] / p50s[0];
    println!("single-row INSERT: Switchyard / direct p50 = {ratio:.2}x");
    figures.insert("insert_p50_ratio".into(), serde_json::json!(ratio));

    let mut bulk = Vec::new();
    for (name, client, base) in [
        ("direct", &direct, 2_000_000i64),
        ("switchyard", &proxy, 3_000_000),
    ] {
        let values: Vec<String> = (0..10_000)
            .map(|i| format!("({}, 'bulk', {}.25)", base + i, i % 100))
            .collect();
        let statement = format!(
            "INSERT INTO sales.bench_writes (id, note, amount) VALUES {}",
            values.join(", ")
        );
        let t = Instant::now();
        let n = client.execute(statement.as_str(), &[]).await?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        anyhow::ensure!(n == 10_000, "{name}: {n} rows inserted");
        println!("10 000-row INSERT {name}: {ms:.1} ms");
        figures.insert(format!("bulk_{name}_ms"), serde_json::json!(ms));
        bulk.push(ms);
    }
    let ratio = bulk[1] / bulk[0];
    println!("10 000-row INSERT: Switchyard / direct = {ratio:.2}x");
    figures.insert("bulk_ratio".into(), serde_json::json!(ratio));
    Ok(serde_json::Value::Object(figures))
}
