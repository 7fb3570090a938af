//! `pgbench` (P1): pgbench's select-only point query in simple and prepared mode, 1
//! and 8 clients, direct vs through Switchyard: TPS, p50/p99 latency, ratio.
//!
//! Both sides run the same script (pgbench's built-in `-S` with the table
//! schema-qualified, as Switchyard serves it under its dataset's schema).

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::common::{connect, origin, Origin, Served};

/// Scale of the pgbench tables (100 000 accounts per unit).
const SCALE: u32 = 10;

/// One pgbench run's figures.
struct Run {
    tps: f64,
    p50_ms: f64,
    p99_ms: f64,
    transactions: usize,
}

/// Runs pgbench for `seconds` with `clients` against host:port; latencies from its
/// per-transaction log.
#[allow(clippy::too_many_arguments)]
fn pgbench(
    dir: &Path,
    (host, port, user, password, db): (&str, u16, &str, &str, &str),
    script: &Path,
    mode: &str,
    clients: u32,
    seconds: u32,
    tag: &str,
) -> Result<Run> {
    let logs = dir.join(format!("log-{tag}"));
    std::fs::create_dir_all(&logs)?;
    let out = std::process::Command::new("pgbench")
        .env("PGPASSWORD", password)
        .current_dir(&logs)
        .args(["-n", "-h", host, "-p", &port.to_string(), "-U", user])
        .args(["-M", mode, "-c", &clients.to_string()])
        .args([
            "-j",
            &clients.min(2).to_string(),
            "-T",
            &seconds.to_string(),
        ])
        .args(["-l", "--log-prefix", "tx", "-f"])
        .arg(script)
        .arg(db)
        .output()
        .context("pgbench (install postgresql-contrib or postgresql-client)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "pgbench {tag}: {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let tps = stdout
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l["tps = ".len()..].split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .with_context(|| format!("no tps in pgbench output: {stdout}"))?;
    // Log lines: client_id transaction_no latency_us script_no epoch epoch_us.
    let mut latencies = Vec::new();
    for entry in std::fs::read_dir(&logs)? {
        let text = std::fs::read_to_string(entry?.path())?;
        latencies.extend(
            text.lines()
                .filter_map(|l| l.split_whitespace().nth(2))
                .filter_map(|v| v.parse::<u64>().ok()),
        );
    }
    anyhow::ensure!(
        !latencies.is_empty(),
        "pgbench {tag} logged no transactions"
    );
    latencies.sort_unstable();
    let pct =
        |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)] as f64 / 1e3;
    Ok(Run {
        tps,
        p50_ms: pct(50),
        p99_ms: pct(99),
        transactions: latencies.len(),
    })
}

/// Creates database `pgbench` with pgbench's tables at [`SCALE`].
async fn init(o: &Origin) -> Result<()> {
    let admin = connect(&o.host, o.port, &o.user, &o.password, "postgres").await?;
    admin
        .batch_execute("DROP DATABASE IF EXISTS pgbench")
        .await?;
    admin.batch_execute("CREATE DATABASE pgbench").await?;
    let out = std::process::Command::new("pgbench")
        .env("PGPASSWORD", &o.password)
        .args(["-i", "-q", "-s", &SCALE.to_string(), "-h", &o.host])
        .args(["-p", &o.port.to_string(), "-U", &o.user, "pgbench"])
        .output()
        .context("pgbench -i")?;
    anyhow::ensure!(
        out.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Runs P1; its figures as JSON.
pub async fn point_queries(seconds: u32) -> Result<Value> {
    let o = origin()?;
    init(&o).await?;
    let dir = tempfile::tempdir()?;
    let script = |schema: &str| -> Result<std::path::PathBuf> {
        let path = dir.path().join(format!("select-only-{schema}.sql"));
        std::fs::write(
            &path,
            format!(
                "\\set aid random(1, {})\nSELECT abalance FROM {schema}.pgbench_accounts WHERE aid = :aid;\n",
                100_000 * SCALE
            ),
        )?;
        Ok(path)
    };
    let direct_script = script("public")?;
    let proxied_script = script("pgbench")?;
    let config = format!(
        r#"users:
  - {{ name: bench, password: pw, roles: [reader] }}
roles:
  reader: {{ allow: ["pgbench.*"] }}
origins:
  pgbench: {{ kind: postgres, url: "postgres://{user}:{pw}@{host}:{port}/pgbench?sslmode=disable" }}
datasets:
  pgbench: {{ origin: pgbench, tables: [public.pgbench_accounts] }}
audit: {{ path: "{audit}" }}
"#,
        user = o.user,
        pw = o.password,
        host = o.host,
        port = o.port,
        audit = dir.path().join("audit.jsonl").display(),
    );
    let served = Served::start(dir.path(), &config).await?;
    println!(
        "P1 point queries: pgbench select-only (scale {SCALE}), {seconds} s per run, direct vs through Switchyard"
    );
    println!();
    println!("| mode | clients | direct TPS | Switchyard TPS | ratio | direct p50 / p99 | Switchyard p50 / p99 |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut figures = Vec::new();
    for mode in ["simple", "prepared"] {
        for clients in [1u32, 8] {
            let d = pgbench(
                dir.path(),
                (&o.host, o.port, &o.user, &o.password, "pgbench"),
                &direct_script,
                mode,
                clients,
                seconds,
                &format!("direct-{mode}-{clients}"),
            )?;
            let s = pgbench(
                dir.path(),
                ("127.0.0.1", served.port, "bench", "pw", "switchyard"),
                &proxied_script,
                mode,
                clients,
                seconds,
                &format!("switchyard-{mode}-{clients}"),
            )?;
            let ratio = s.tps / d.tps;
            println!(
                "| {mode} | {clients} | {:.0} | {:.0} | {ratio:.2}× | {:.3} / {:.3} ms | {:.3} / {:.3} ms |",
                d.tps, s.tps, d.p50_ms, d.p99_ms, s.p50_ms, s.p99_ms
            );
            let side = |r: &Run| {
                json!({
                    "tps": r.tps,
                    "p50_ms": r.p50_ms,
                    "p99_ms": r.p99_ms,
                    "transactions": r.transactions,
                })
            };
            figures.push(json!({
                "mode": mode,
                "clients": clients,
                "direct": side(&d),
                "switchyard": side(&s),
                "tps_ratio": ratio,
            }));
        }
    }
    println!();
    Ok(json!({ "scale": SCALE, "seconds": seconds, "runs": figures }))
}
