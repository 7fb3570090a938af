//! `tpch`: the 22 TPC-H queries (P3) direct, through postgres_fdw, through Switchyard
//! with every table on one PostgreSQL origin, and through Switchyard with the tables
//! split across PostgreSQL, MongoDB and the local store; and the rows each origin sent
//! Switchyard per query (P4, from EXPLAIN ANALYZE).
//!
//! Data comes from the `tpchgen` crate (deterministic, in-process) and is loaded into
//! PostgreSQL (all tables), MongoDB (customer, nation, region) and the local store
//! (part, partsupp, supplier). Every answer is compared with direct PostgreSQL's
//! (numbers to 2 places); a wrong or failed answer is reported, not timed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::SinkExt;
use serde_json::{json, Value};
use tokio_postgres::Client;

use crate::common::{connect, metric_count, origin, text_rows, Origin, Served};

/// Column kinds, and how each origin stores them.
#[derive(Clone, Copy)]
enum Kind {
    Int,
    Text,
    Money,
    Date,
}

impl Kind {
    fn postgres(self) -> &'static str {
        match self {
            Kind::Int => "integer",
            Kind::Text => "text",
            Kind::Money => "numeric(15,2)",
            Kind::Date => "date",
        }
    }

    /// The local store is SQLite: money is REAL there (its connector reads float8).
    fn sqlite(self) -> &'static str {
        match self {
            Kind::Int => "INTEGER",
            Kind::Text | Kind::Date => "TEXT",
            Kind::Money => "REAL",
        }
    }
}

/// Where a table lives in the split setting.
#[derive(Clone, Copy, PartialEq)]
enum Home {
    Postgres,
    Mongo,
    Local,
}

struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
    key: &'static str,
    home: Home,
}

use Kind::*;

const TABLES: &[Table] = &[
    Table {
        name: "region",
        columns: &[("r_regionkey", Int), ("r_name", Text), ("r_comment", Text)],
        key: "r_regionkey",
        home: Home::Mongo,
    },
    Table {
        name: "nation",
        columns: &[
            ("n_nationkey", Int),
            ("n_name", Text),
            ("n_regionkey", Int),
            ("n_comment", Text),
        ],
        key: "n_nationkey",
        home: Home::Mongo,
    },
    Table {
        name: "customer",
        columns: &[
            ("c_custkey", Int),
            ("c_name", Text),
            ("c_address", Text),
            ("c_nationkey", Int),
            ("c_phone", Text),
            ("c_acctbal", Money),
            ("c_mktsegment", Text),
            ("c_comment", Text),
        ],
        key: "c_custkey",
        home: Home::Mongo,
    },
    Table {
        name: "part",
        columns: &[
            ("p_partkey", Int),
            ("p_name", Text),
            ("p_mfgr", Text),
            ("p_brand", Text),
            ("p_type", Text),
            ("p_size", Int),
            ("p_container", Text),
            ("p_retailprice", Money),
            ("p_comment", Text),
        ],
        key: "p_partkey",
        home: Home::Local,
    },
    Table {
        name: "supplier",
        columns: &[
            ("s_suppkey", Int),
            ("s_name", Text),
            ("s_address", Text),
            ("s_nationkey", Int),
            ("s_phone", Text),
            ("s_acctbal", Money),
            ("s_comment", Text),
        ],
        key: "s_suppkey",
        home: Home::Local,
    },
    Table {
        name: "partsupp",
        columns: &[
            ("ps_partkey", Int),
            ("ps_suppkey", Int),
            ("ps_availqty", Int),
            ("ps_supplycost", Money),
            ("ps_comment", Text),
        ],
        key: "ps_partkey, ps_suppkey",
        home: Home::Local,
    },
    Table {
        name: "orders",
        columns: &[
            ("o_orderkey", Int),
            ("o_custkey", Int),
            ("o_orderstatus", Text),
            ("o_totalprice", Money),
            ("o_orderdate", Date),
            ("o_orderpriority", Text),
            ("o_clerk", Text),
            ("o_shippriority", Int),
            ("o_comment", Text),
        ],
        key: "o_orderkey",
        home: Home::Postgres,
    },
    Table {
        name: "lineitem",
        columns: &[
            ("l_orderkey", Int),
            ("l_partkey", Int),
            ("l_suppkey", Int),
            ("l_linenumber", Int),
            ("l_quantity", Money),
            ("l_extendedprice", Money),
            ("l_discount", Money),
            ("l_tax", Money),
            ("l_returnflag", Text),
            ("l_linestatus", Text),
            ("l_shipdate", Date),
            ("l_commitdate", Date),
            ("l_receiptdate", Date),
            ("l_shipinstruct", Text),
            ("l_shipmode", Text),
            ("l_comment", Text),
        ],
        key: "l_orderkey, l_linenumber",
        home: Home::Postgres,
    },
];

/// A table's rows in TPC-H's `|`-separated text (no trailing `|`), about 1 MB per chunk,
/// generated on a thread of its own.
fn generate(table: &'static str, sf: f64) -> tokio::sync::mpsc::Receiver<String> {
    use tpchgen::generators::*;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    std::thread::spawn(move || {
        let mut chunk = String::with_capacity(1 << 20);
        let mut push = |row: &dyn std::fmt::Display| -> bool {
            use std::fmt::Write;
            let _ = write!(chunk, "{row}");
            chunk.pop(); // the trailing `|`
            chunk.push('\n');
            chunk.len() < 1 << 20 || tx.blocking_send(std::mem::take(&mut chunk)).is_ok()
        };
        let go = match table {
            "region" => RegionGenerator::new(sf, 1, 1).iter().all(|r| push(&r)),
            "nation" => NationGenerator::new(sf, 1, 1).iter().all(|r| push(&r)),
            "customer" => CustomerGenerator::new(sf, 1, 1).iter().all(|r| push(&r)),
            "part" => PartGenerator::new(sf, 1, 1).iter().all(|r| push(&r)),
            "supplier" => SupplierGenerator::new(sf, 1, 1).iter().all(|r| push(&r)),
            "partsupp" => PartSuppGenerator::new(sf, 1, 1).iter().all(|r| push(&r)),
            "orders" => OrderGenerator::new(sf, 1, 1).iter().all(|r| push(&r)),
            "lineitem" => LineItemGenerator::new(sf, 1, 1).iter().all(|r| push(&r)),
            _ => false,
        };
        if go && !chunk.is_empty() {
            let _ = tx.blocking_send(chunk);
        }
    });
    rx
}

/// Loads every table into PostgreSQL database `tpch` (schema `tpch`, keys, ANALYZE).
async fn load_postgres(o: &Origin, sf: f64) -> Result<()> {
    let admin = connect(&o.host, o.port, &o.user, &o.password, "postgres").await?;
    admin.batch_execute("DROP DATABASE IF EXISTS tpch").await?;
    admin.batch_execute("CREATE DATABASE tpch").await?;
    let c = connect(&o.host, o.port, &o.user, &o.password, "tpch").await?;
    c.batch_execute("CREATE SCHEMA tpch").await?;
    for t in TABLES {
        let columns: Vec<String> = t
            .columns
            .iter()
            .map(|(n, k)| format!("{n} {} NOT NULL", k.postgres()))
            .collect();
        c.batch_execute(&format!(
            "CREATE TABLE tpch.{} ({})",
            t.name,
            columns.join(", ")
        ))
        .await?;
        let sink = c
            .copy_in(&format!(
                "COPY tpch.{} FROM STDIN (FORMAT text, DELIMITER '|')",
                t.name
            ))
            .await?;
        futures::pin_mut!(sink);
        let mut rows = generate(t.name, sf);
        while let Some(chunk) = rows.recv().await {
            sink.send(bytes::Bytes::from(chunk)).await?;
        }
        sink.finish().await?;
        c.batch_execute(&format!(
            "ALTER TABLE tpch.{} ADD PRIMARY KEY ({}); ANALYZE tpch.{}",
            t.name, t.key, t.name
        ))
        .await?;
    }
    // The foreign-key columns joins use, indexed as TPC-H set-ups usually do.
    c.batch_execute(
        "CREATE INDEX ON tpch.lineitem (l_partkey, l_suppkey); \
         CREATE INDEX ON tpch.orders (o_custkey); \
         CREATE INDEX ON tpch.partsupp (ps_suppkey)",
    )
    .await?;
    Ok(())
}

/// Loads the MongoDB tables into database `tpch` (keys Int64, money Decimal128).
async fn load_mongo(url: &str, sf: f64) -> Result<()> {
    use mongodb::bson::{Bson, Decimal128, Document};
    let client = mongodb::Client::with_uri_str(url).await?;
    let db = client.database("tpch");
    for t in TABLES.iter().filter(|t| t.home == Home::Mongo) {
        let coll = db.collection::<Document>(t.name);
        coll.drop().await?;
        let mut rows = generate(t.name, sf);
        while let Some(chunk) = rows.recv().await {
            let mut docs = Vec::new();
            for line in chunk.lines() {
                let mut doc = Document::new();
                for ((name, kind), value) in t.columns.iter().zip(line.split('|')) {
                    let v = match kind {
                        Int => Bson::Int64(value.parse()?),
                        Money => Bson::Decimal128(value.parse::<Decimal128>()?),
                        Text | Date => Bson::String(value.to_string()),
                    };
                    doc.insert(*name, v);
                }
                docs.push(doc);
            }
            coll.insert_many(docs).await?;
        }
    }
    Ok(())
}

/// Loads the local-store tables into the SQLite file Switchyard serves as `local`.
async fn load_local(path: &std::path::Path, sf: f64) -> Result<()> {
    let store = switchyard_connectors::local::LocalStore::open(path)?;
    for t in TABLES.iter().filter(|t| t.home == Home::Local) {
        let columns: Vec<String> = t
            .columns
            .iter()
            .map(|(n, k)| format!("{n} {} NOT NULL", k.sqlite()))
            .collect();
        store.execute_batch(&format!(
            "DROP TABLE IF EXISTS {0}; CREATE TABLE {0} ({1}, PRIMARY KEY ({2}))",
            t.name,
            columns.join(", "),
            t.key
        ))?;
        let mut rows = generate(t.name, sf);
        while let Some(chunk) = rows.recv().await {
            let mut sql = format!("BEGIN; INSERT INTO {} VALUES ", t.name);
            for (i, line) in chunk.lines().enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                sql.push('(');
                for (j, ((_, kind), value)) in t.columns.iter().zip(line.split('|')).enumerate() {
                    if j > 0 {
                        sql.push(',');
                    }
                    match kind {
                        Int | Money => sql.push_str(value),
                        Text | Date => {
                            sql.push('\'');
                            sql.push_str(&value.replace('\'', "''"));
                            sql.push('\'');
                        }
                    }
                }
                sql.push(')');
            }
            sql.push_str("; COMMIT;");
            store.execute_batch(&sql)?;
        }
    }
    Ok(())
}

/// Sets up the postgres_fdw cluster: foreign tables for every origin table, analyzed.
async fn setup_fdw(o: &Origin, fdw_port: u16) -> Result<Client> {
    let c = connect(&o.host, fdw_port, &o.user, &o.password, "postgres").await?;
    c.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS tpch CASCADE; \
         DROP SERVER IF EXISTS origin CASCADE; \
         CREATE EXTENSION IF NOT EXISTS postgres_fdw; \
         CREATE SERVER origin FOREIGN DATA WRAPPER postgres_fdw \
           OPTIONS (host '{host}', port '{port}', dbname 'tpch', fetch_size '10000'); \
         CREATE USER MAPPING FOR CURRENT_USER SERVER origin \
           OPTIONS (user '{user}', password '{pw}'); \
         CREATE SCHEMA tpch; \
         IMPORT FOREIGN SCHEMA tpch FROM SERVER origin INTO tpch",
        host = o.host,
        port = o.port,
        user = o.user,
        pw = o.password,
    ))
    .await?;
    for t in TABLES {
        c.batch_execute(&format!("ANALYZE tpch.{}", t.name)).await?;
    }
    Ok(c)
}

/// The queries of bench/tpch/queries.sql, numbered.
fn queries() -> Vec<(usize, String)> {
    let text = include_str!("../tpch/queries.sql");
    let mut out = Vec::new();
    for part in text.split("\n-- Q").skip(1) {
        let (number, body) = part.split_once('\n').unwrap_or((part, ""));
        if let Ok(n) = number.trim().parse() {
            out.push((n, body.trim().trim_end_matches(';').to_string()));
        }
    }
    out
}

/// A query for the split setting: each table under the schema that serves it there.
fn split_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(i) = rest.find("tpch.") {
        out.push_str(&rest[..i]);
        let after = &rest[i + "tpch.".len()..];
        let len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let name = &after[..len];
        let schema = match TABLES.iter().find(|t| t.name == name).map(|t| t.home) {
            Some(Home::Mongo) => "tpchmongo",
            Some(Home::Local) => "local",
            _ => "tpch",
        };
        out.push_str(schema);
        out.push('.');
        out.push_str(name);
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

/// One answer cell, compared as TPC-H answers are: numbers to 2 decimal places.
fn same_cell(a: &Option<String>, b: &Option<String>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            if a.trim_end() == b.trim_end() {
                return true;
            }
            match (a.parse::<f64>(), b.parse::<f64>()) {
                (Ok(x), Ok(y)) => {
                    let (x, y) = ((x * 100.0).round(), (y * 100.0).round());
                    // One cent either way: the two sides may round a value that sits
                    // on .xx5 differently (floats in the local store).
                    (x - y).abs() <= 1.0 + 1e-9 * x.abs()
                }
                _ => false,
            }
        }
        _ => false,
    }
}

type Rows = Vec<Vec<Option<String>>>;

/// Whether `got` is `want`: in order, or, where ORDER BY leaves ties, as a multiset.
fn same_answer(want: &Rows, got: &Rows) -> std::result::Result<(), String> {
    if want.len() != got.len() {
        return Err(format!("{} rows instead of {}", got.len(), want.len()));
    }
    let rows_equal = |a: &Vec<Option<String>>, b: &Vec<Option<String>>| {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_cell(x, y))
    };
    if want.iter().zip(got).all(|(a, b)| rows_equal(a, b)) {
        return Ok(());
    }
    let key = |r: &Vec<Option<String>>| {
        r.iter()
            .map(|c| match c.as_deref().map(|s| (s, s.parse::<f64>())) {
                Some((_, Ok(f))) => format!("{:020.2}", f),
                Some((s, Err(_))) => s.trim_end().to_string(),
                None => "\u{0}".into(),
            })
            .collect::<Vec<_>>()
    };
    let mut w = want.clone();
    let mut g = got.clone();
    w.sort_by_key(key);
    g.sort_by_key(key);
    match w.iter().zip(&g).position(|(a, b)| !rows_equal(a, b)) {
        None => Ok(()),
        Some(i) => Err(format!("row {:?} instead of {:?}", g[i], w[i])),
    }
}

/// The outcome of one query in one setting.
struct Outcome {
    time: Option<Duration>,
    error: Option<String>,
}

/// Runs `sql` once to check its answer against `want` (also the warm-up), then `runs`
/// timed times; the best time.
async fn measure(
    client: &Client,
    sql: &str,
    want: Option<&Rows>,
    runs: usize,
    timeout: Duration,
) -> (Outcome, Option<Rows>) {
    let once = || async {
        match tokio::time::timeout(timeout, text_rows(client, sql)).await {
            Ok(r) => r.map_err(|e| format!("{e:#}")),
            Err(_) => Err(format!("timed out after {} s", timeout.as_secs())),
        }
    };
    let first = match once().await {
        Ok(rows) => rows,
        Err(e) => {
            return (
                Outcome {
                    time: None,
                    error: Some(e),
                },
                None,
            )
        }
    };
    if let Some(want) = want {
        if let Err(e) = same_answer(want, &first) {
            return (
                Outcome {
                    time: None,
                    error: Some(format!("wrong answer: {e}")),
                },
                None,
            );
        }
    }
    let mut best: Option<Duration> = None;
    for _ in 0..runs {
        let t = Instant::now();
        if let Err(e) = once().await {
            return (
                Outcome {
                    time: None,
                    error: Some(e),
                },
                None,
            );
        }
        let d = t.elapsed();
        best = Some(best.map_or(d, |b| b.min(d)));
    }
    (
        Outcome {
            time: best,
            error: None,
        },
        Some(first),
    )
}

/// Rows each origin sent for `sql`, from EXPLAIN ANALYZE: the `output_rows` of the
/// `SchemaCastScanExec` datafusion-federation puts over each SQL origin's
/// `VirtualExecutionPlan` (the line below names the origin), and of each `MongoExec`.
async fn rows_from_origins(client: &Client, sql: &str) -> Result<BTreeMap<&'static str, u64>> {
    let mut by_origin = BTreeMap::new();
    for row in text_rows(client, &format!("EXPLAIN ANALYZE {sql}")).await? {
        let lines: Vec<&str> = row.iter().flatten().flat_map(|c| c.lines()).collect();
        if std::env::var_os("SWITCHYARD_BENCH_SHOW_PLANS").is_some() {
            eprintln!("{}", lines.join("\n"));
        }
        for (i, line) in lines.iter().enumerate() {
            let origin = if line.contains("MongoExec:") {
                "mongodb"
            } else if line.contains("SchemaCastScanExec") {
                // The origin's node is the next one below, past DataFusion's wrappers.
                let below = lines[i + 1..]
                    .iter()
                    .find(|l| !l.contains("CooperativeExec"));
                match below {
                    Some(next) if next.contains("VirtualExecutionPlan name=sqlite") => "local",
                    Some(next) if next.contains("VirtualExecutionPlan name=postgres") => "postgres",
                    _ => continue,
                }
            } else {
                continue;
            };
            if let Some((_, rest)) = line.split_once("output_rows=") {
                *by_origin.entry(origin).or_insert(0) += metric_count(rest);
            }
        }
    }
    Ok(by_origin)
}

/// Runs the TPC-H benchmark; its figures as JSON.
pub async fn tpch(sf: f64, runs: usize, timeout: Duration, only: Vec<usize>) -> Result<Value> {
    let o = origin()?;
    let mongo_url = std::env::var("SWITCHYARD_TEST_MONGO_URL")
        .context("SWITCHYARD_TEST_MONGO_URL is not set: run bench/run")?;
    let fdw_port: u16 = std::env::var("SWITCHYARD_BENCH_FDW_PORT")
        .context("SWITCHYARD_BENCH_FDW_PORT is not set: run bench/run")?
        .parse()?;
    let tmp = tempfile::tempdir()?;
    // SWITCHYARD_BENCH_DIR keeps the local store and config after the run (debugging).
    let dir = std::env::var_os("SWITCHYARD_BENCH_DIR").map_or(tmp.path().to_path_buf(), Into::into);
    std::fs::create_dir_all(&dir)?;
    let local = dir.join("local.db");

    let t = Instant::now();
    load_postgres(&o, sf).await?;
    load_mongo(&mongo_url, sf).await?;
    load_local(&local, sf).await?;
    let load_s = t.elapsed().as_secs_f64();
    println!("P3 TPC-H SF {sf}: generated and loaded in {load_s:.1} s");

    let direct = connect(&o.host, o.port, &o.user, &o.password, "tpch").await?;
    let fdw = setup_fdw(&o, fdw_port).await?;
    let config = format!(
        r#"users:
  - {{ name: bench, password: pw, roles: [reader] }}
roles:
  reader: {{ allow: ["*"] }}
origins:
  tpch: {{ kind: postgres, url: "postgres://{user}:{pw}@{host}:{port}/tpch?sslmode=disable" }}
  tpchmongo: {{ kind: mongodb, url: "{mongo_url}", database: tpch }}
datasets:
  tpch: {{ origin: tpch, tables: [{tables}] }}
  tpchmongo: {{ origin: tpchmongo, tables: [customer, nation, region] }}
  tpchcopy: {{ origin: tpch, tables: [{tables}], mode: materialize }}
local: {{ path: "{local}" }}
audit: {{ path: "{audit}" }}
"#,
        user = o.user,
        pw = o.password,
        host = o.host,
        port = o.port,
        tables = TABLES
            .iter()
            .map(|t| format!("tpch.{}", t.name))
            .collect::<Vec<_>>()
            .join(", "),
        local = local.display(),
        audit = dir.join("audit.jsonl").display(),
    );
    let served = Served::start(&dir, &config).await?;
    println!("Switchyard's log: {}", served.log.display());
    let proxied = connect("127.0.0.1", served.port, "bench", "pw", "switchyard").await?;
    // The materialized copies of every table (tpchcopy.*) are taken at start.
    let t = Instant::now();
    loop {
        let ready: i64 = proxied
            .query_one(
                "SELECT count(*) FROM switchyard.datasets WHERE state = 'ready'",
                &[],
            )
            .await?
            .get(0);
        if ready as usize == TABLES.len() {
            break;
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(3600),
            "the local copies were not taken within an hour"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "local copies of the {} tables taken in {:.1} s",
        TABLES.len(),
        t.elapsed().as_secs_f64()
    );

    const SETTINGS: [&str; 5] = [
        "direct",
        "postgres_fdw",
        "switchyard_pg",
        "switchyard_split",
        "switchyard_copies",
    ];
    println!("best of {runs} after a checked warm-up run; ratios against direct PostgreSQL");
    println!();
    println!("| query | direct | postgres_fdw | Switchyard, all on PostgreSQL | Switchyard, split PG/Mongo/local | Switchyard, local copies | rows from origins (all-PG; split: pg/mongo/local) |");
    println!("|---|---:|---:|---:|---:|---:|---|");
    let mut results = Vec::new();
    let mut totals = [Duration::ZERO; 5];
    let mut complete = 0;
    for (n, sql) in queries() {
        if !only.is_empty() && !only.contains(&n) {
            continue;
        }
        let split = split_sql(&sql);
        let (d, want) = measure(&direct, &sql, None, runs, timeout).await;
        let Some(want) = want else {
            anyhow::bail!("Q{n} fails on PostgreSQL itself: {:?}", d.error);
        };
        let (f, _) = measure(&fdw, &sql, Some(&want), runs, timeout).await;
        let (p, _) = measure(&proxied, &sql, Some(&want), runs, timeout).await;
        let (s, _) = measure(&proxied, &split, Some(&want), runs, timeout).await;
        let copies = sql.replace("tpch.", "tpchcopy.");
        let (c, _) = measure(&proxied, &copies, Some(&want), runs, timeout).await;
        let outcomes = [d, f, p, s, c];
        let rows_pg = rows_from_origins(&proxied, &sql).await.unwrap_or_default();
        let rows_split = rows_from_origins(&proxied, &split)
            .await
            .unwrap_or_default();
        if outcomes.iter().all(|o| o.time.is_some()) {
            complete += 1;
            for (total, o) in totals.iter_mut().zip(&outcomes) {
                *total += o.time.unwrap_or_default();
            }
        }
        let base = outcomes[0].time.unwrap_or_default().as_secs_f64();
        let cell = |i: usize| {
            let o = &outcomes[i];
            match (&o.time, &o.error) {
                (Some(t), _) if i == 0 => format!("{:.1} ms", t.as_secs_f64() * 1e3),
                (Some(t), _) => format!(
                    "{:.1} ms ({:.2}×)",
                    t.as_secs_f64() * 1e3,
                    t.as_secs_f64() / base
                ),
                (None, Some(e)) => format!("FAIL: {}", e.chars().take(80).collect::<String>()),
                (None, None) => "FAIL".into(),
            }
        };
        let count = |m: &BTreeMap<&str, u64>, k: &str| m.get(k).copied().unwrap_or(0);
        println!(
            "| Q{n} | {} | {} | {} | {} | {} | {}; {}/{}/{} |",
            cell(0),
            cell(1),
            cell(2),
            cell(3),
            cell(4),
            count(&rows_pg, "postgres"),
            count(&rows_split, "postgres"),
            count(&rows_split, "mongodb"),
            count(&rows_split, "local"),
        );
        let mut entry = serde_json::Map::new();
        entry.insert("query".into(), json!(n));
        entry.insert("result_rows".into(), json!(want.len()));
        for (name, o) in SETTINGS.iter().zip(&outcomes) {
            entry.insert(
                (*name).into(),
                json!({
                    "ms": o.time.map(|t| t.as_secs_f64() * 1e3),
                    "error": o.error,
                }),
            );
        }
        entry.insert(
            "rows_from_origins".into(),
            json!({ "switchyard_pg": rows_pg, "switchyard_split": rows_split }),
        );
        results.push(Value::Object(entry));
    }
    let total_ms: Vec<f64> = totals.iter().map(|t| t.as_secs_f64() * 1e3).collect();
    println!(
        "| total of the {complete} queries every setting answered | {:.0} ms | {:.0} ms ({:.2}×) | {:.0} ms ({:.2}×) | {:.0} ms ({:.2}×) | {:.0} ms ({:.2}×) | |",
        total_ms[0],
        total_ms[1],
        total_ms[1] / total_ms[0],
        total_ms[2],
        total_ms[2] / total_ms[0],
        total_ms[3],
        total_ms[3] / total_ms[0],
        total_ms[4],
        total_ms[4] / total_ms[0],
    );
    println!();
    drop(served);
    Ok(json!({
        "scale_factor": sf,
        "runs": runs,
        "load_s": load_s,
        "split": {
            "postgres": ["lineitem", "orders"],
            "mongodb": ["customer", "nation", "region"],
            "local": ["part", "partsupp", "supplier"],
        },
        "queries": results,
        "totals_ms": {
            "queries_answered_everywhere": complete,
            "direct": total_ms[0],
            "postgres_fdw": total_ms[1],
            "switchyard_pg": total_ms[2],
            "switchyard_split": total_ms[3],
            "switchyard_copies": total_ms[4],
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_22_queries_are_read() {
        let q = queries();
        assert_eq!(
            q.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            (1..=22).collect::<Vec<_>>()
        );
        assert!(q
            .iter()
            .all(|(_, sql)| sql.starts_with("select") || sql.starts_with("with")));
    }

    #[test]
    fn split_moves_only_the_tables_that_move() {
        let q = split_sql("select * from tpch.lineitem, tpch.part, tpch.partsupp\nwhere x in (select 1 from tpch.nation n1)");
        assert_eq!(
            q,
            "select * from tpch.lineitem, local.part, local.partsupp\nwhere x in (select 1 from tpchmongo.nation n1)"
        );
        for (_, sql) in queries() {
            let s = split_sql(&sql);
            for t in [
                "customer", "nation", "region", "part", "partsupp", "supplier",
            ] {
                assert!(!s.contains(&format!("tpch.{t} ")), "{s}");
                assert!(!s.contains(&format!("tpch.{t},")), "{s}");
                assert!(!s.contains(&format!("tpch.{t}\n")), "{s}");
            }
        }
    }

    #[test]
    fn answers_compare_numbers_to_two_places() {
        let r = |v: &[&str]| vec![v.iter().map(|s| Some(s.to_string())).collect::<Vec<_>>()];
        assert!(same_answer(&r(&["A", "12.3400"]), &r(&["A", "12.34"])).is_ok());
        assert!(same_answer(&r(&["A", "12.344999"]), &r(&["A", "12.34"])).is_ok());
        assert!(same_answer(&r(&["A", "12.35"]), &r(&["A", "12.40"])).is_err());
        assert!(same_answer(&r(&["A", "1"]), &r(&["B", "1"])).is_err());
        assert!(same_answer(&r(&["A"]), &vec![]).is_err());
    }
}
