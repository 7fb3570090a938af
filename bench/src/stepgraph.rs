//! `stepgraph`: faz's complete example through the REST API — a PostgreSQL step, a
//! MongoDB step linked to it, a merge — against the two native queries run directly
//! (p50 of each request vs p50 of the sum), the merge's share of the request, and
//! the speed-up of two independent steps run concurrently.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::common::{connect, origin};

fn p50(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e3
}

/// Runs the step-graph benchmark: `requests` timed requests per figure.
pub async fn stepgraph(requests: usize) -> Result<Value> {
    let pg = origin()?;
    let mongo_url = std::env::var("SWITCHYARD_TEST_MONGO_URL")
        .context("SWITCHYARD_TEST_MONGO_URL is not set: run bench/run")?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("switchyard.yaml");
    let url = format!(
        "postgres://{}:{}@{}:{}/sales?sslmode=disable",
        pg.user, pg.password, pg.host, pg.port
    );
    std::fs::write(
        &file,
        format!(
            r#"listen: 127.0.0.1:0
http: {{ listen: 127.0.0.1:0 }}
users:
  - {{ name: agent, password: pw, roles: [reader] }}
roles:
  reader: {{ allow: ["*"] }}
audit: {{ path: audit.jsonl, fsync: never }}
origins:
  sales: {{ kind: postgres, url: "{url}" }}
  docs:  {{ kind: mongodb, url: "{mongo_url}", database: shop }}
datasets:
  sales: {{ origin: sales, tables: [sales.customers, sales.orders] }}
  shop:  {{ origin: docs, tables: [profiles] }}
"#
        ),
    )?;
    let config = switchyard_config::Config::load(&file)?;
    let server = switchyard::start(config).await?;
    let base = format!("http://{}", server.http_addr.context("the HTTP door")?);
    let http = reqwest::Client::new();
    let post = |body: Value| {
        let http = http.clone();
        let url = format!("{base}/v1/query");
        async move {
            let r = http
                .post(url)
                .basic_auth("agent", Some("pw"))
                .json(&body)
                .send()
                .await?;
            anyhow::ensure!(r.status().is_success(), "HTTP {}", r.status());
            Ok::<Value, anyhow::Error>(r.json().await?)
        }
    };

    // The seed's complete example.
    let example = json!({
        "steps": [
            {"step_id": "s0", "database": "sales", "table": "customers", "language": "sql",
             "query": "SELECT id, name, region FROM customers WHERE region = 'north'"},
            {"step_id": "s1", "database": "docs", "table": "profiles", "language": "mql",
             "query": {"operation": "find", "filter": {}, "projection": {"customer_id": 1, "tier": 1}},
             "depends_on": ["s0"], "link_from": "id", "link_to": "customer_id"}
        ],
        "merge": "SELECT s1.tier, s0.name, s0.region FROM s0 JOIN s1 ON s0.id = s1.customer_id ORDER BY s0.name DESC"
    });
    let warm = post(example.clone()).await?;
    let rows = warm["data"]["row_count"].as_u64().unwrap_or(0);
    anyhow::ensure!(rows > 0, "the example returned no rows: {warm}");
    let mut request = Vec::new();
    let mut merge_share = Vec::new();
    for _ in 0..requests {
        let t = Instant::now();
        let answer = post(example.clone()).await?;
        request.push(t.elapsed());
        let total = answer["metadata"]["execution_time_ms"]
            .as_f64()
            .unwrap_or(0.0);
        let merge = answer["metadata"]["merge_latency_ms"]
            .as_f64()
            .unwrap_or(0.0);
        if total > 0.0 {
            merge_share.push(Duration::from_secs_f64(merge / total));
        }
    }

    // The same two queries run directly, one after the other as the link requires.
    let direct_pg = connect(&pg.host, pg.port, &pg.user, &pg.password, "sales").await?;
    let mongo = mongodb::Client::with_uri_str(&mongo_url).await?;
    let profiles = mongo
        .database("shop")
        .collection::<mongodb::bson::Document>("profiles");
    let statement = direct_pg
        .prepare("SELECT id, name, region FROM sales.customers WHERE region = 'north'")
        .await?;
    let mut direct = Vec::new();
    for _ in 0..requests + 1 {
        let t = Instant::now();
        let customers = direct_pg.query(&statement, &[]).await?;
        let ids: Vec<i32> = customers.iter().map(|r| r.get(0)).collect();
        let cursor = profiles
            .find(mongodb::bson::doc! {"customer_id": {"$in": ids}})
            .projection(mongodb::bson::doc! {"customer_id": 1, "tier": 1})
            .await?;
        let docs: Vec<_> = futures::TryStreamExt::try_collect(cursor).await?;
        anyhow::ensure!(docs.len() as u64 == rows, "direct: {} profiles", docs.len());
        direct.push(t.elapsed());
    }
    direct.remove(0);
    let (request_p50, direct_p50) = (p50(request), p50(direct));
    let share = p50(merge_share) / 1e3;
    println!(
        "seed example ({rows} rows): request p50 {request_p50:.2} ms, native queries direct p50 {direct_p50:.2} ms, ratio {:.2}x; merge {:.0}% of the request",
        request_p50 / direct_p50,
        share * 100.0
    );

    // Two independent slow steps: concurrently vs one alone.
    let slow = |id: &str| {
        json!({"step_id": id, "database": "sales", "table": "orders",
               "query": format!("SELECT count(*) AS n_{id} FROM orders a JOIN orders b ON a.amount < b.amount")})
    };
    let one = json!({"steps": [slow("s0")]});
    let two = json!({"steps": [slow("s0"), slow("s1")], "merge": "SELECT * FROM s0 CROSS JOIN s1"});
    post(one.clone()).await?;
    let runs = 5;
    let (mut alone, mut both) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        post(one.clone()).await?;
        alone.push(t.elapsed());
        let t = Instant::now();
        post(two.clone()).await?;
        both.push(t.elapsed());
    }
    let (alone, both) = (p50(alone), p50(both));
    let speedup = 2.0 * alone / both;
    println!(
        "independent steps: one alone {alone:.0} ms, two together {both:.0} ms: {speedup:.2}x of running them one after the other"
    );
    server.stop();
    Ok(json!({
        "example_rows": rows,
        "requests": requests,
        "request_p50_ms": request_p50,
        "direct_p50_ms": direct_p50,
        "ratio": request_p50 / direct_p50,
        "merge_share_p50": share,
        "one_slow_step_ms": alone,
        "two_slow_steps_ms": both,
        "parallel_speedup": speedup,
    }))
}
