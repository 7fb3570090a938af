//! `mongo`: a selective filter + aggregate over a MongoDB collection, with and
//! without pushdown.

use std::time::Instant;

use anyhow::{Context, Result};
use tokio_postgres::Client;

use crate::common::{connect, metric_count, stats, Stats};

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

/// Runs the MongoDB pushdown benchmark.
pub async fn mongo(documents: usize, runs: usize) -> Result<()> {
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
