//! `safety`: what the safety pipeline costs on a point query.

use std::time::{Duration, Instant};

use anyhow::Result;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser as SqlParser;
use switchyard_safety::{Pipeline, Policy, StatementInput};
use tokio_postgres::Client;

use crate::common::{connect, origin, stats, us, Origin};

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

/// Runs the safety benchmark.
pub async fn safety(iterations: usize) -> Result<()> {
    let o = origin()?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("switchyard.yaml");
    std::fs::write(&file, config_text(&o, &dir.path().join("audit.jsonl")))?;
    let config = switchyard_config::Config::load(&file)?;

    // 1. The pipeline alone, on the plan of the point query.
    let (ctx, _origins, _materializer) = switchyard::server::base_context(&config)?;
    let pipeline = Pipeline::new(Policy::new(&config, "public"));
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
