//! What every benchmark shares: the origins `bench/run` started, connections,
//! latency statistics, and a `switchyard serve` child process.

use std::time::Duration;

use anyhow::{Context, Result};
use tokio_postgres::{Client, NoTls};

/// The PostgreSQL origin `bench/run` started (scripts/with-origins).
pub struct Origin {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
}

/// Reads the origin from the environment.
pub fn origin() -> Result<Origin> {
    let var = |n: &str| std::env::var(n).with_context(|| format!("{n} is not set: run bench/run"));
    Ok(Origin {
        host: var("SWITCHYARD_TEST_PG_HOST")?,
        port: var("SWITCHYARD_TEST_PG_PORT")?.parse()?,
        user: var("SWITCHYARD_TEST_PG_USER")?,
        password: var("SWITCHYARD_TEST_PG_PASSWORD")?,
    })
}

/// A tokio-postgres connection (no TLS).
pub async fn connect(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
    db: &str,
) -> Result<Client> {
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

/// Mean and percentiles of latency samples.
pub struct Stats {
    pub mean: Duration,
    pub p50: Duration,
    pub p99: Duration,
}

/// Sorts `samples` and summarizes them.
pub fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let n = samples.len();
    Stats {
        mean: samples.iter().sum::<Duration>() / n as u32,
        p50: samples[n / 2],
        p99: samples[(n * 99 / 100).min(n - 1)],
    }
}

/// Microseconds with one decimal.
pub fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

/// A count as DataFusion prints metrics: `1234`, `12.34 K`, `1.00 M`.
pub fn metric_count(text: &str) -> u64 {
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

/// Peak resident memory of a process, from /proc (kB).
pub fn peak_rss_kb(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc status")
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A `switchyard serve` child process: the release binary next to this one, so its
/// memory is its own. Killed when dropped.
pub struct Served {
    child: std::process::Child,
    /// The port it listens on.
    pub port: u16,
    /// Its log (stderr).
    pub log: std::path::PathBuf,
}

impl Served {
    /// Starts Switchyard with `config` (YAML without `listen:`, which is added) written
    /// into `dir`, and waits until it accepts connections.
    pub async fn start(dir: &std::path::Path, config: &str) -> Result<Served> {
        let bin = std::env::current_exe()?
            .parent()
            .context("bench binary folder")?
            .join("switchyard");
        anyhow::ensure!(
            bin.exists(),
            "{} is missing: bench/run builds it",
            bin.display()
        );
        let port = free_port()?;
        let file = dir.join(format!("switchyard-{port}.yaml"));
        std::fs::write(&file, format!("listen: 127.0.0.1:{port}\n{config}"))?;
        // The log outlives the run (the config's folder does not), for post-mortems.
        let log_file = std::env::temp_dir().join(format!("switchyard-bench-{port}.log"));
        let log = std::fs::File::create(&log_file)?;
        let child = std::process::Command::new(&bin)
            .args(["serve", "--config"])
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()?;
        let served = Served {
            child,
            port,
            log: log_file.clone(),
        };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(served);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("switchyard did not start; see {}", log_file.display())
    }

    /// Peak resident memory so far (kB).
    pub fn peak_rss_kb(&self) -> Result<u64> {
        peak_rss_kb(self.child.id())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Rows of a simple-protocol query as text cells (`None` for NULL).
pub async fn text_rows(client: &Client, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
    Ok(client
        .simple_query(sql)
        .await?
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect())
}
