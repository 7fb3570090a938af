//! `switchyard-bench`: performance figures measured against direct PostgreSQL in
//! the same run. Run through `bench/run`, which starts the PostgreSQL origin.
//!
//! `safety`: what the safety pipeline costs on a point query — the pipeline's own
//! time per statement (plain and governed role), and end-to-end latency of a
//! prepared point query direct to PostgreSQL vs through Switchyard as a plain
//! role vs as a role with a row filter and a masked column.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser as SqlParser;
use switchyard_safety::{Pipeline, Policy, StatementInput};
use tokio_postgres::{Client, NoTls};

#[derive(Parser)]
#[command(
    name = "switchyard-bench",
    about = "Switchyard benchmarks (see bench/README.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Safety pipeline overhead on a point query.
    Safety {
        /// Timed point queries per client.
        #[arg(long, default_value_t = 3000)]
        iterations: usize,
    },
    /// A large result streamed to the client, direct vs through Switchyard, with
    /// Switchyard's peak memory (a separate `switchyard serve` process per size).
    Stream {
        /// Row counts to stream (comma-separated).
        #[arg(long, value_delimiter = ',', default_values_t = [1_000_000, 5_000_000])]
        rows: Vec<u64>,
    },
    /// A selective filter + aggregate over a MongoDB collection, with and without pushdown.
    Mongo {
        /// Documents in the collection (loaded once, kept between runs of one server).
        #[arg(long, default_value_t = 1_000_000)]
        documents: usize,
        /// Timed runs per mode.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
}

struct Origin {
    host: String,
    port: u16,
    user: String,
    password: String,
}

fn origin() -> Result<Origin> {
    let var = |n: &str| std::env::var(n).with_context(|| format!("{n} is not set: run bench/run"));
    Ok(Origin {
        host: var("SWITCHYARD_TEST_PG_HOST")?,
        port: var("SWITCHYARD_TEST_PG_PORT")?.parse()?,
        user: var("SWITCHYARD_TEST_PG_USER")?,
        password: var("SWITCHYARD_TEST_PG_PASSWORD")?,
    })
}

fn config_text(o: &Origin, audit: &std::path::Path) -> String {
    format!(
        r#"listen: 127.0.0.1:0
users:
  - {{ name: plain, password: pw, roles: [reader] }}
  - {{ name: governed, password: pw, roles: [regional], attributes: {{ region: north }} }}
roles:
  reader: {{ allow: ["sales.*"] }}
  regional:
    allow: [sales.customers]
    columns:
      sales.customers: {{ deny: [created_at], mask: {{ email: hash }} }}
    row_filters:
      sales.customers: "region = user.region"
origins:
  sales: {{ kind: postgres, url: "postgres://{user}:{pw}@{host}:{port}/sales?sslmode=disable" }}
datasets:
  sales: {{ origin: sales, tables: [sales.customers, sales.orders] }}
audit: {{ path: "{audit}", fsync: interval }}
"#,
        user = o.user,
        pw = o.password,
        host = o.host,
        port = o.port,
        audit = audit.display(),
    )
}

async fn connect(host: &str, port: u16, user: &str, password: &str, db: &str) -> Result<Client> {
    let (client, conn) = tokio_postgres::Config::new()
        .host(host)
        .port(port)
        .user(user)
        .password(password)
        .dbname(db)
        .connect(NoTls)
        .await?;
    tokio::spawn(conn);
    Ok(client)
}

struct Stats {
    mean: Duration,
    p50: Duration,
    p99: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let n = samples.len();
    Stats {
        mean: samples.iter().sum::<Duration>() / n as u32,
        p50: samples[n / 2],
        p99: samples[(n * 99 / 100).min(n - 1)],
    }
}

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

/// Latencies of a prepared point query, ids cycling over north customers (4, 8, ...).
async fn point_queries(client: &Client, iterations: usize) -> Result<Vec<Duration>> {
    let stmt = client
        .prepare("SELECT id, name, email, region FROM sales.customers WHERE id = $1")
        .await?;
    for i in 0..200 {
        client.query(&stmt, &[&(4 * (1 + i % 50))]).await?;
    }
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let id = 4 * (1 + (i % 50) as i32);
        let t = Instant::now();
        let rows = client.query(&stmt, &[&id]).await?;
        samples.push(t.elapsed());
        anyhow::ensure!(rows.len() == 1, "customer {id} should be found");
    }
    Ok(samples)
}

/// Latencies of the same point query sent as simple-protocol text (each one parsed,
/// planned and checked anew).
async fn simple_queries(client: &Client, iterations: usize) -> Result<Vec<Duration>> {
    let sql = |i: usize| {
        format!(
            "SELECT id, name, email, region FROM sales.customers WHERE id = {}",
            4 * (1 + i % 50)
        )
    };
    for i in 0..200 {
        client.simple_query(&sql(i)).await?;
    }
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let q = sql(i);
        let t = Instant::now();
        let rows = client.simple_query(&q).await?;
        samples.push(t.elapsed());
        std::hint::black_box(rows);
    }
    Ok(samples)
}

async fn safety(iterations: usize) -> Result<()> {
    let o = origin()?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("switchyard.yaml");
    std::fs::write(&file, config_text(&o, &dir.path().join("audit.jsonl")))?;
    let config = switchyard_config::Config::load(&file)?;

    // 1. The pipeline alone, on the plan of the point query.
    let (ctx, _origins) = switchyard::server::base_context(&config)?;
    let pipeline = Pipeline::new(Policy::new(&config, "public")?);
    let sql = "SELECT id, name, email, region FROM sales.customers WHERE id = 4";
    let ast = SqlParser::parse_sql(&PostgreSqlDialect {}, sql)?.remove(0);
    let state = ctx.state();
    let plan = state
        .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
            ast.clone(),
        )))
        .await?;
    let input = StatementInput {
        ast: &ast,
        stacked: 1,
        trailing_comment: false,
    };
    let mut pipeline_rows = Vec::new();
    for user in ["plain", "governed"] {
        let who = pipeline.principal(user);
        for _ in 0..200 {
            pipeline
                .check(&input, plan.clone(), &who, &state)
                .map_err(|d| anyhow::anyhow!("{}", d.error))?;
        }
        let mut samples = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let t = Instant::now();
            let checked = pipeline.check(&input, plan.clone(), &who, &state);
            samples.push(t.elapsed());
            std::hint::black_box(checked.is_ok());
        }
        pipeline_rows.push((user, stats(samples)));
    }
    let mut planning = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        let p = state
            .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
                ast.clone(),
            )))
            .await?;
        planning.push(t.elapsed());
        std::hint::black_box(p);
    }
    let planning = stats(planning);
    let audit = switchyard_safety::AuditLog::open(
        &dir.path().join("bench-audit.jsonl"),
        switchyard_config::Fsync::Interval,
    )?;
    let record = switchyard_safety::AuditRecord {
        time: "2026-11-23T00:00:00.000000Z".into(),
        user: "governed".into(),
        fingerprint: "SELECT id, name, email, region FROM sales.customers WHERE id = ?".into(),
        outcome: "ok".into(),
        ..Default::default()
    };
    let mut appends = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        audit.append(&record)?;
        appends.push(t.elapsed());
    }
    let appends = stats(appends);

    // 2. End to end, all three in this run.
    let server = switchyard::start(config).await?;
    let port = server.addr.port();
    let direct = connect(&o.host, o.port, &o.user, &o.password, "sales").await?;
    let plain = connect("127.0.0.1", port, "plain", "pw", "switchyard").await?;
    let governed = connect("127.0.0.1", port, "governed", "pw", "switchyard").await?;
    let d = stats(point_queries(&direct, iterations).await?);
    let p = stats(point_queries(&plain, iterations).await?);
    let g = stats(point_queries(&governed, iterations).await?);
    let ds = stats(simple_queries(&direct, iterations).await?);
    let ps = stats(simple_queries(&plain, iterations).await?);
    let gs = stats(simple_queries(&governed, iterations).await?);

    println!("safety pipeline on a point query ({iterations} iterations each, µs)");
    println!();
    println!("| step | mean | p50 | p99 |");
    println!("|---|---:|---:|---:|");
    println!(
        "| DataFusion planning (for scale) | {} | {} | {} |",
        us(planning.mean),
        us(planning.p50),
        us(planning.p99)
    );
    println!(
        "| audit record append (fsync interval) | {} | {} | {} |",
        us(appends.mean),
        us(appends.p50),
        us(appends.p99)
    );
    for (user, s) in &pipeline_rows {
        println!(
            "| Pipeline::check, {user} role | {} | {} | {} |",
            us(s.mean),
            us(s.p50),
            us(s.p99)
        );
    }
    println!();
    println!("| point query | mean | p50 | p99 | p50 vs direct |");
    println!("|---|---:|---:|---:|---:|");
    for (name, s, base) in [
        ("prepared, direct PostgreSQL", &d, &d),
        ("prepared, Switchyard plain role", &p, &d),
        ("prepared, Switchyard row filter + mask", &g, &d),
        ("simple, direct PostgreSQL", &ds, &ds),
        ("simple, Switchyard plain role", &ps, &ds),
        ("simple, Switchyard row filter + mask", &gs, &ds),
    ] {
        println!(
            "| {name} | {} | {} | {} | {:.2}× |",
            us(s.mean),
            us(s.p50),
            us(s.p99),
            s.p50.as_secs_f64() / base.p50.as_secs_f64()
        );
    }
    server.stop();
    Ok(())
}

/// Loads `documents` events into MongoDB database `bench` (unless already there).
async fn load_events(url: &str, documents: usize) -> Result<()> {
    use mongodb::bson::{doc, Decimal128, Document};
    let client = mongodb::Client::with_uri_str(url).await?;
    let events = client.database("bench").collection::<Document>("events");
    if events.estimated_document_count().await? as usize == documents {
        return Ok(());
    }
    events.drop().await?;
    let t = Instant::now();
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..documents {
        let cents = (i % 100_000) as i64;
        batch.push(doc! {
            "_id": i as i64,
            "k": (i % 1000) as i32,
            "v": (i % 97) as i32,
            "amount": format!("{}.{:02}", cents / 100, cents % 100).parse::<Decimal128>()?,
            "note": "a few dozen bytes of text that every document carries",
        });
        if batch.len() == 10_000 {
            events.insert_many(std::mem::take(&mut batch)).await?;
        }
    }
    if !batch.is_empty() {
        events.insert_many(batch).await?;
    }
    println!(
        "loaded {documents} documents in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Documents MongoExec nodes received, from EXPLAIN ANALYZE.
async fn documents_received(client: &Client, sql: &str) -> Result<u64> {
    let mut total = 0;
    for row in client
        .simple_query(&format!("EXPLAIN ANALYZE {sql}"))
        .await?
    {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = row {
            for i in 0..r.len() {
                for line in r.get(i).unwrap_or_default().lines() {
                    if let Some((_, rest)) = line
                        .split_once("MongoExec")
                        .and_then(|(_, l)| l.split_once("output_rows="))
                    {
                        total += metric_count(rest);
                    }
                }
            }
        }
    }
    Ok(total)
}

/// A count as DataFusion prints metrics: `1234`, `12.34 K`, `1.00 M`.
fn metric_count(text: &str) -> u64 {
    let number: String = text
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let value: f64 = number.parse().unwrap_or(0.0);
    let unit = text[number.len()..].trim_start().chars().next();
    let scale = match unit {
        Some('K') => 1e3,
        Some('M') => 1e6,
        Some('B') | Some('G') => 1e9,
        _ => 1.0,
    };
    (value * scale).round() as u64
}

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

/// Peak resident memory of a process, from /proc (kB).
fn peak_rss_kb(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc status")
}

async fn stream(sizes: Vec<u64>) -> Result<()> {
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
    let bin = std::env::current_exe()?
        .parent()
        .context("bench binary folder")?
        .join("switchyard");
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: bench/run builds it",
        bin.display()
    );
    let dir = tempfile::tempdir()?;
    println!("streaming N rows × 4 columns (bigint, float8, text, timestamptz), direct vs through Switchyard");
    println!();
    println!("| rows | format | direct | Switchyard | ratio | Switchyard peak RSS |");
    println!("|---:|---|---:|---:|---:|---:|");
    for n in sizes {
        let sql = format!("SELECT id, v, t, ts FROM sales.bench_stream WHERE id <= {n}");
        for format in [
            "text (psql, FETCH_COUNT 10000: a cursor)",
            "text (psql, one simple query)",
            "binary (tokio-postgres, extended)",
        ] {
            // A fresh server per measurement: peak RSS only grows.
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0")?;
                l.local_addr()?.port()
            };
            let file = dir.path().join("stream.yaml");
            std::fs::write(
                &file,
                format!(
                    r#"listen: 127.0.0.1:{port}
users:
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
                ),
            )?;
            let mut child = std::process::Command::new(&bin)
                .args(["serve", "--config"])
                .arg(&file)
                .stderr(std::process::Stdio::null())
                .spawn()?;
            let mut up = false;
            for _ in 0..100 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    up = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::ensure!(up, "switchyard did not start");
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
            let rss = peak_rss_kb(child.id())?;
            let _ = child.kill();
            let _ = child.wait();
            println!(
                "| {n} | {format} | {:.2} s | {:.2} s | {:.2}× | {:.0} MB |",
                d.as_secs_f64(),
                s.as_secs_f64(),
                s.as_secs_f64() / d.as_secs_f64(),
                rss as f64 / 1024.0
            );
        }
    }
    Ok(())
}

/// Timings of `sql` with an index on `k` (dropped again afterwards).
async fn indexed_run(url: &str, client: &Client, sql: &str, runs: usize) -> Result<(Stats, u64)> {
    let mongo = mongodb::Client::with_uri_str(url).await?;
    let events = mongo
        .database("bench")
        .collection::<mongodb::bson::Document>("events");
    let t = Instant::now();
    events
        .create_index(
            mongodb::IndexModel::builder()
                .keys(mongodb::bson::doc! {"k": 1})
                .build(),
        )
        .await?;
    println!("index on k built in {:.1} s", t.elapsed().as_secs_f64());
    client.simple_query(sql).await?;
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        client.simple_query(sql).await?;
        times.push(t.elapsed());
    }
    let docs = documents_received(client, sql).await?;
    events.drop_index("k_1").await?;
    Ok((stats(times), docs))
}

async fn mongo(documents: usize, runs: usize) -> Result<()> {
    let url = std::env::var("SWITCHYARD_TEST_MONGO_URL")
        .context("SWITCHYARD_TEST_MONGO_URL is not set: run bench/run")?;
    load_events(&url, documents).await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("switchyard.yaml");
    std::fs::write(
        &file,
        format!(
            r#"listen: 127.0.0.1:0
users:
  - {{ name: plain, password: pw, roles: [reader] }}
roles:
  reader: {{ allow: ["*"] }}
origins:
  pushed:  {{ kind: mongodb, url: "{url}", database: bench }}
  fetched: {{ kind: mongodb, url: "{url}", database: bench, pushdown: false }}
datasets:
  pushed:  {{ origin: pushed, tables: [events] }}
  fetched: {{ origin: fetched, tables: [events] }}
"#
        ),
    )?;
    let config = switchyard_config::Config::load(&file)?;
    let server = switchyard::start(config).await?;
    let client = connect("127.0.0.1", server.addr.port(), "plain", "pw", "switchyard").await?;
    let query = |schema: &str| {
        format!("SELECT count(*), sum(v), sum(amount) FROM {schema}.events WHERE k = 7 AND v < 50")
    };
    let mut results = Vec::new();
    for schema in ["pushed", "fetched"] {
        let sql = query(schema);
        let answer = client.simple_query(&sql).await?; // warm-up, and the answer
        let answer: Vec<String> = answer
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or("NULL"))
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
                _ => None,
            })
            .collect();
        let mut times = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            client.simple_query(&sql).await?;
            times.push(t.elapsed());
        }
        let docs = documents_received(&client, &sql).await?;
        results.push((schema, stats(times), docs, answer));
    }
    anyhow::ensure!(
        results[0].3 == results[1].3,
        "answers differ: {:?} vs {:?}",
        results[0].3,
        results[1].3
    );
    // Only a pushed-down filter can use an index: the same query again with one on `k`
    // (best effort: SecantusDB 0.7 fails to build it over 1 M documents).
    let indexed = match indexed_run(&url, &client, &query("pushed"), runs).await {
        Ok(r) => Some(r),
        Err(e) => {
            println!("index on k: not measured ({e:#})");
            None
        }
    };
    println!("MongoDB filter + aggregate over {documents} documents ({runs} runs each; SecantusDB on this machine)");
    println!("query: {}", query("<schema>"));
    println!();
    println!("| mode | documents transferred | p50 time | mean time |");
    println!("|---|---:|---:|---:|");
    for (schema, s, docs, _) in &results {
        let mode = if *schema == "pushed" {
            "pushdown ($match + $group at the origin)"
        } else {
            "no pushdown (whole collection, filter + aggregate here)"
        };
        println!(
            "| {mode} | {docs} | {:.1} ms | {:.1} ms |",
            s.p50.as_secs_f64() * 1e3,
            s.mean.as_secs_f64() * 1e3
        );
    }
    if let Some((s, docs)) = &indexed {
        println!(
            "| pushdown, index on k at the origin | {docs} | {:.1} ms | {:.1} ms |",
            s.p50.as_secs_f64() * 1e3,
            s.mean.as_secs_f64() * 1e3
        );
    }
    println!();
    println!(
        "ratio: {:.1}× less time, {}× fewer documents with pushdown",
        results[1].1.p50.as_secs_f64() / results[0].1.p50.as_secs_f64(),
        results[1].2 / results[0].2.max(1)
    );
    if let Some((s, _)) = &indexed {
        println!(
            "with the index: {:.0}× less time",
            results[1].1.p50.as_secs_f64() / s.p50.as_secs_f64()
        );
    }
    server.stop();
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Safety { iterations } => runtime.block_on(safety(iterations)),
        Command::Mongo { documents, runs } => runtime.block_on(mongo(documents, runs)),
        Command::Stream { rows } => runtime.block_on(stream(rows)),
    }
}
