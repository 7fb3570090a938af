//! `sync` (issue 16, P5): 10 000 single-row INSERTs into a `mode: sync` dataset
//! while its origin is unreachable (each one local transaction, so 10 000 queued
//! entries), then the origin returns: the time until the origin and the local
//! copy hold all of them, against the same 10 000 rows inserted directly into
//! PostgreSQL in one transaction. The offline INSERTs' latency is the sync-mode
//! write latency (a durable local commit, no origin round trip).

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::common::{connect, origin, text_rows, Served};

/// A TCP forwarder to the origin that can be cut (the origin unreachable) and
/// restored on the same port.
struct Forwarder {
    port: u16,
    target: u16,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Forwarder {
    async fn start(target: u16) -> Result<Forwarder> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let mut f = Forwarder {
            port,
            target,
            task: None,
        };
        f.serve(listener);
        Ok(f)
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let target = self.target;
        self.task = Some(tokio::spawn(async move {
            let mut open = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                open.spawn(async move {
                    if let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    {
                        // As the client and the origin would: without it, Nagle's
                        // algorithm and delayed ACKs stall small messages ~40 ms.
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }

    async fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    async fn restore(&mut self) -> Result<()> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await?;
        self.serve(listener);
        Ok(())
    }
}

fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let n = samples.len();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(samples[n / 2]), ms(samples[(n * 95 / 100).min(n - 1)]))
}

/// Runs P5 with `writes` offline writes; its figures as JSON.
pub async fn sync(writes: usize) -> Result<serde_json::Value> {
    let o = origin()?;
    let direct = connect(&o.host, o.port, &o.user, &o.password, "sales").await?;
    direct
        .batch_execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
              WHERE slot_name = 'switchyard_field_bench_sync' AND NOT active;
             DROP PUBLICATION IF EXISTS switchyard_field_bench_sync;
             DROP SCHEMA IF EXISTS switchyard_sync CASCADE;
             DROP TABLE IF EXISTS sales.bench_sync, sales.bench_sync_direct;
             CREATE TABLE sales.bench_sync (id bigint PRIMARY KEY, note text, amount numeric(10,2));
             CREATE TABLE sales.bench_sync_direct (id bigint PRIMARY KEY, note text, amount numeric(10,2));",
        )
        .await?;
    let mut figures = serde_json::Map::new();

    // Direct: the same rows, one transaction, one prepared INSERT per row.
    let insert = direct
        .prepare(
            "INSERT INTO sales.bench_sync_direct (id, note, amount) VALUES ($1, 'offline', 2.50)",
        )
        .await?;
    let t = Instant::now();
    direct.batch_execute("BEGIN").await?;
    for i in 0..writes as i64 {
        direct.execute(&insert, &[&i]).await?;
    }
    direct.batch_execute("COMMIT").await?;
    let direct_ms = t.elapsed().as_secs_f64() * 1e3;
    println!("{writes} INSERTs direct in one transaction: {direct_ms:.0} ms");
    figures.insert("direct_ms".into(), serde_json::json!(direct_ms));

    let mut forwarder = Forwarder::start(o.port).await?;
    let dir = tempfile::tempdir()?;
    let served = Served::start(
        dir.path(),
        &format!(
            r#"users: [ {{ name: bench, password: bench, roles: [writer] }} ]
roles: {{ writer: {{ grants: [{{ tables: ["field.*", "switchyard.*"], privileges: [select, insert, update, delete] }}] }} }}
origins:
  sales: {{ kind: postgres, url: "postgres://{user}:{pw}@127.0.0.1:{fwd}/sales?sslmode=disable" }}
datasets:
  field.bench_sync: {{ origin: sales, table: sales.bench_sync, mode: sync, conflict: origin_wins }}
local: {{ path: local.db }}
audit: {{ path: audit.jsonl }}
"#,
            user = o.user,
            pw = o.password,
            fwd = forwarder.port,
        ),
    )
    .await?;
    let proxy = connect("127.0.0.1", served.port, "bench", "bench", "switchyard").await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = text_rows(
            &proxy,
            "SELECT state FROM switchyard.datasets WHERE name = 'field.bench_sync'",
        )
        .await?;
        if r.first().and_then(|r| r[0].as_deref()) == Some("streaming") {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "field.bench_sync never streamed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    forwarder.cut().await;
    let insert = proxy
        .prepare("INSERT INTO field.bench_sync (id, note, amount) VALUES ($1, 'offline', 2.50)")
        .await?;
    let mut samples = Vec::with_capacity(writes);
    for i in 0..writes as i64 {
        let t = Instant::now();
        proxy.execute(&insert, &[&i]).await?;
        samples.push(t.elapsed());
    }
    let (p50, p95) = percentiles(samples);
    println!("sync-mode INSERT (local commit, origin away): p50 {p50:.3} ms, p95 {p95:.3} ms");
    figures.insert(
        "sync_insert".into(),
        serde_json::json!({ "p50_ms": p50, "p95_ms": p95, "inserts": writes }),
    );

    forwarder.restore().await?;
    let t = Instant::now();
    let want = writes.to_string();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        // The origin first: asking the proxy's status while it replays takes
        // its time (and the origin holds all rows before the queue is empty).
        let at_origin = text_rows(&direct, "SELECT count(*) FROM sales.bench_sync").await?;
        if at_origin[0][0].as_deref() == Some(want.as_str()) {
            let queue = text_rows(
                &proxy,
                "SELECT pending FROM switchyard.sync_queue WHERE dataset = 'field.bench_sync'",
            )
            .await?;
            if queue.first().and_then(|r| r[0].as_deref()) == Some("0") {
                break;
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "the queue did not drain");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let converge_ms = t.elapsed().as_secs_f64() * 1e3;
    let local = text_rows(&proxy, "SELECT count(*) FROM field.bench_sync").await?;
    anyhow::ensure!(
        local[0][0].as_deref() == Some(want.as_str()),
        "the local copy holds {:?} rows",
        local[0][0]
    );
    let applied = text_rows(&direct, "SELECT count(*) FROM switchyard_sync.applied").await?;
    anyhow::ensure!(
        applied[0][0].as_deref() == Some(want.as_str()),
        "{:?} entries applied",
        applied[0][0]
    );
    let ratio = converge_ms / direct_ms;
    println!(
        "P5: {writes} offline writes converge {converge_ms:.0} ms after the origin returns ({ratio:.1}x direct)"
    );
    figures.insert("converge_ms".into(), serde_json::json!(converge_ms));
    figures.insert("converge_ratio".into(), serde_json::json!(ratio));
    drop(served);
    Ok(serde_json::Value::Object(figures))
}
