//! `switchyard-bench`: performance figures measured against direct PostgreSQL (and
//! postgres_fdw) in the same run. Run through `bench/run`, which builds release and
//! starts the origins; `all` (the default there) runs P1–P4 and writes
//! `bench/results/<date>.json`, which bench/chart.py draws.
//!
//! `safety`: what the safety pipeline costs on a point query — the pipeline's own
//! time per statement (plain and governed role), and end-to-end latency of a
//! prepared point query direct to PostgreSQL vs through Switchyard as a plain
//! role vs as a role with a row filter and a masked column.

mod common;
mod freshness;
mod mongo;
mod pgbench;
mod report;
mod safety;
mod snapshot;
mod stepgraph;
mod stream;
mod sync;
mod tpch;
mod writes;

use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

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
    /// Taking a materialized copy vs COPY TO STDOUT of the same rows, with peak memory.
    Snapshot {
        /// Row counts to copy (comma-separated).
        #[arg(long, value_delimiter = ',', default_values_t = [1_000_000, 5_000_000])]
        rows: Vec<u64>,
    },
    /// How soon a commit at the origin is visible in a live copy (single-row
    /// commits and 10 000-row transactions).
    Freshness {
        /// Single-row commits, each timed.
        #[arg(long, default_value_t = 1000)]
        commits: usize,
        /// 10 000-row transactions, each timed.
        #[arg(long, default_value_t = 10)]
        transactions: usize,
    },
    /// Write latency: single-row INSERTs and one 10 000-row INSERT, direct vs
    /// through Switchyard.
    Writes {
        /// Timed single-row INSERTs per side.
        #[arg(long, default_value_t = 2000)]
        inserts: usize,
    },
    /// P5: offline writes to a sync dataset, then the time until the origin
    /// and the local copy converge; and the sync-mode write latency.
    Sync {
        /// Writes made while the origin is away.
        #[arg(long, default_value_t = 10_000)]
        writes: usize,
    },
    /// P1: pgbench select-only, simple and prepared, 1 and 8 clients.
    Pgbench {
        /// Seconds per pgbench run.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
    },
    /// P3 + P4: the 22 TPC-H queries direct, through postgres_fdw, through Switchyard
    /// (all on PostgreSQL; split over PostgreSQL, MongoDB and the local store), with
    /// the rows each origin sent.
    Tpch(TpchArgs),
    /// P1, P2, P3 and P4 in one go (what `bench/run` runs by default).
    All {
        #[command(flatten)]
        tpch: TpchArgs,
        /// Seconds per pgbench run.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// Row counts to stream (comma-separated).
        #[arg(long, value_delimiter = ',', default_values_t = [1_000_000, 5_000_000])]
        rows: Vec<u64>,
    },
    /// faz's example through the REST API vs its native queries run directly, the
    /// merge's share, and the speed-up of independent steps.
    Stepgraph {
        /// Timed requests.
        #[arg(long, default_value_t = 200)]
        requests: usize,
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

#[derive(clap::Args)]
struct TpchArgs {
    /// TPC-H scale factor (0.1 quick, 1 on request).
    #[arg(long, default_value_t = 0.1)]
    sf: f64,
    /// Timed runs per query and setting (after one checked warm-up run); the best counts.
    #[arg(long, default_value_t = 2)]
    runs: usize,
    /// Longest one query may run in one setting before it counts as failed (seconds).
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Only these queries (comma-separated numbers); all 22 by default.
    #[arg(long, value_delimiter = ',')]
    queries: Vec<usize>,
}

async fn run_tpch(a: TpchArgs) -> Result<()> {
    let v = tpch::tpch(a.sf, a.runs, Duration::from_secs(a.timeout), a.queries).await?;
    saved(report::record("tpch", v)?);
    Ok(())
}

fn saved(file: std::path::PathBuf) {
    println!("figures written to {}", file.display());
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Safety { iterations } => runtime.block_on(safety::safety(iterations)),
        Command::Stepgraph { requests } => runtime.block_on(async {
            saved(report::record(
                "stepgraph",
                stepgraph::stepgraph(requests).await?,
            )?);
            Ok(())
        }),
        Command::Mongo { documents, runs } => runtime.block_on(mongo::mongo(documents, runs)),
        Command::Snapshot { rows } => runtime.block_on(async {
            saved(report::record("snapshot", snapshot::snapshot(rows).await?)?);
            Ok(())
        }),
        Command::Freshness {
            commits,
            transactions,
        } => runtime.block_on(async {
            saved(report::record(
                "freshness",
                freshness::freshness(commits, transactions).await?,
            )?);
            Ok(())
        }),
        Command::Writes { inserts } => runtime.block_on(async {
            saved(report::record("writes", writes::writes(inserts).await?)?);
            Ok(())
        }),
        Command::Sync { writes } => runtime.block_on(async {
            saved(report::record("sync", sync::sync(writes).await?)?);
            Ok(())
        }),
        Command::Stream { rows } => runtime.block_on(async {
            saved(report::record("stream", stream::stream(rows).await?)?);
            Ok(())
        }),
        Command::Pgbench { seconds } => runtime.block_on(async {
            saved(report::record(
                "pgbench",
                pgbench::point_queries(seconds).await?,
            )?);
            Ok(())
        }),
        Command::Tpch(a) => runtime.block_on(run_tpch(a)),
        Command::All {
            tpch,
            seconds,
            rows,
        } => runtime.block_on(async {
            saved(report::record(
                "pgbench",
                pgbench::point_queries(seconds).await?,
            )?);
            saved(report::record("stream", stream::stream(rows).await?)?);
            run_tpch(tpch).await
        }),
    }
}
