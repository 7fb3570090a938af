//! The `switchyard` command.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchyard_config::Config;

/// Switchyard: a PostgreSQL wire-protocol proxy that joins tables from many origins
/// (PostgreSQL, SQLite, CSV/Parquet/NDJSON files, a local store) in one SQL statement.
#[derive(Parser)]
#[command(name = "switchyard", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the origins and datasets of a YAML config to PostgreSQL clients.
    ///
    /// The config names listeners, users and roles, origins and the datasets
    /// (schema.table names) clients see. `${VAR}` in it is read from the environment.
    Serve {
        /// The YAML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Create demo data (a SQLite crm origin and Parquet/CSV events) and serve it;
    /// needs no external server. Log in as demo / demo.
    Demo {
        /// Folder for the demo data and its config (recreated on each run).
        #[arg(long, default_value = "switchyard-demo")]
        dir: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:6432")]
        listen: String,
        /// Address of the HTTP door (step graphs).
        #[arg(long, default_value = "127.0.0.1:8787")]
        http: String,
    },
    /// Copy materialized datasets into the local store now, showing progress: every
    /// `mode: materialize` dataset of the config, or the one named. A running
    /// `serve` on the same config serves the new copies at once.
    Materialize {
        /// The YAML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// One dataset (`schema.name`); all materialized datasets when left out.
        dataset: Option<String>,
    },
    /// Serve the MCP tools over stdio for one user (an agent's local MCP server).
    /// The user proves themselves with SWITCHYARD_PASSWORD or SWITCHYARD_TOKEN.
    Mcp {
        /// The YAML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// The user whose roles govern every tool call.
        #[arg(long)]
        user: String,
    },
    /// Check a config file and print what it defines, or the first error with its line.
    CheckConfig {
        /// The YAML config file.
        file: PathBuf,
    },
    /// Work with the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain of an audit log: exits non-zero at the first edited,
    /// dropped, reordered or cut record, naming its line.
    Verify {
        /// The audit log (JSON lines).
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SWITCHYARD_LOG")
                .unwrap_or_else(|_| "switchyard=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::CheckConfig { file } => {
            let config = Config::load(&file)?;
            println!("{}: ok", file.display());
            println!("  listen {} (tls {:?})", config.listen, config.tls.mode);
            println!(
                "  {} users, {} roles, {} origins",
                config.users.len(),
                config.roles.len(),
                config.origins.len()
            );
            for d in &config.datasets {
                println!("  {} <- origin {}", d.qualified_name(), d.origin);
            }
            Ok(())
        }
        Command::Audit {
            command: AuditCommand::Verify { file },
        } => {
            let n = switchyard_safety::verify(&file)?;
            println!("{}: ok, {n} records, chain intact", file.display());
            Ok(())
        }
        Command::Materialize { config, dataset } => {
            let config = Config::load(&config)?;
            materialize(config, dataset)
        }
        Command::Mcp { config, user } => {
            let config = Config::load(&config)?;
            mcp_stdio(config, user)
        }
        Command::Serve { config } => {
            let config = Config::load(&config)?;
            serve(config, None)
        }
        Command::Demo { dir, listen, http } => {
            let postgres =
                switchyard::demo::DemoPostgres::start().context("starting the demo PostgreSQL")?;
            let file = switchyard::demo::create(&dir, &listen, &http, postgres.as_ref())
                .context("writing the demo data")?;
            let config = Config::load(&file)?;
            let result = serve(config, Some(postgres.as_ref()));
            drop(postgres);
            result
        }
    }
}

/// Copies materialized datasets with a progress bar each (rows, rows/s).
fn materialize(config: Config, only: Option<String>) -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async move {
        let (_ctx, _origins, materializer) = switchyard::server::base_context(&config)?;
        let names: Vec<String> = match only {
            Some(name) if materializer.keeps(&name) => vec![name],
            Some(name) => anyhow::bail!(
                "{name} is not a materialized dataset of {} (give it mode: materialize)",
                config.file.display()
            ),
            None => materializer.datasets().map(str::to_string).collect(),
        };
        if names.is_empty() {
            println!(
                "{}: no dataset has mode: materialize",
                config.file.display()
            );
        }
        let style = indicatif::ProgressStyle::with_template(
            "{spinner} {prefix}: {human_pos} rows ({per_sec}) {elapsed} {msg}",
        )
        .context("progress style")?;
        for name in names {
            let progress = std::sync::Arc::new(AtomicU64::new(0));
            let bar = indicatif::ProgressBar::new_spinner()
                .with_style(style.clone())
                .with_prefix(name.clone());
            let started = std::time::Instant::now();
            let copy = materializer.copy_now(&name, std::sync::Arc::clone(&progress));
            tokio::pin!(copy);
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
            let result = loop {
                tokio::select! {
                    r = &mut copy => break r,
                    _ = tick.tick() => {
                        bar.set_position(progress.load(Ordering::Relaxed));
                        bar.tick();
                    }
                }
            };
            bar.set_position(progress.load(Ordering::Relaxed));
            match result {
                Ok(info) => {
                    bar.finish_and_clear();
                    let secs = started.elapsed().as_secs_f64();
                    println!(
                        "{name}: {} rows copied in {secs:.1} s ({:.0} rows/s)",
                        info.rows,
                        info.rows as f64 / secs.max(0.001)
                    );
                }
                Err(e) => {
                    bar.abandon();
                    anyhow::bail!("{name}: {e}");
                }
            }
        }
        Ok(())
    })
}

/// The MCP tools on stdin/stdout for `user`, until the client closes stdin.
fn mcp_stdio(config: Config, user: String) -> anyhow::Result<()> {
    use rmcp::ServiceExt;
    let credentials = switchyard::http::Credentials::new(&config.users);
    let proven = match (
        std::env::var("SWITCHYARD_PASSWORD"),
        std::env::var("SWITCHYARD_TOKEN"),
    ) {
        (Ok(password), _) => credentials.password_of(&user, &password),
        (_, Ok(token)) => credentials.token_of(&token).as_deref() == Some(user.as_str()),
        _ => anyhow::bail!("set SWITCHYARD_PASSWORD or SWITCHYARD_TOKEN for user {user}"),
    };
    if !proven {
        anyhow::bail!("authentication failed for user {user}");
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async move {
        let graph = switchyard::server::step_graph(config).await?;
        let session = std::sync::Arc::new(graph.engine().login(
            &user,
            switchyard_engine::Client {
                session_id: 0,
                address: "stdio".into(),
            },
        ));
        let audit = std::sync::Arc::clone(graph.engine().audit());
        let tools = switchyard::mcp::Tools::stdio(graph, session);
        let running = tools
            .serve(rmcp::transport::stdio())
            .await
            .context("starting MCP on stdio")?;
        let _ = running.waiting().await;
        audit.sync().context("syncing the audit log")?;
        Ok(())
    })
}

/// Serves until Ctrl-C; `demo` is `Some(the demo PostgreSQL, if it runs)` for
/// `switchyard demo`.
fn serve(
    config: Config,
    demo: Option<Option<&switchyard::demo::DemoPostgres>>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async move {
        let server = switchyard::start(config).await?;
        if let Some(postgres) = demo {
            let host = server.addr.ip().to_string();
            println!(
                "{}",
                switchyard::demo::banner_with_audit(
                    &host,
                    server.addr.port(),
                    server.http_addr.map(|a| a.port()),
                    postgres,
                    &server.audit.path().display().to_string(),
                )
            );
        } else {
            println!("switchyard: listening on {}", server.addr);
            if let Some(http) = server.http_addr {
                println!("switchyard: HTTP door (step graphs) on http://{http}");
            }
        }
        let audit = std::sync::Arc::clone(&server.audit);
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                println!("switchyard: stopping");
                audit.sync().context("syncing the audit log")?;
                Ok(())
            }
            _ = server.wait() => Err(anyhow::anyhow!("the listener stopped")),
        }
    })
}
