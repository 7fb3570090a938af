//! Shared test harness: real origins (the PostgreSQL cluster `scripts/test` starts,
//! a SQLite file, a folder of files), a Switchyard server in-process on a free
//! port, and clients that connect to it like any user would.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use switchyard::Server;
use tokio_postgres::{Client, NoTls};

/// The PostgreSQL cluster started by `scripts/test`.
#[derive(Debug, Clone)]
pub struct Pg {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub log: PathBuf,
}

pub fn pg() -> Pg {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: run the suite with scripts/test, which starts the PostgreSQL origins")
        })
    };
    Pg {
        host: var("SWITCHYARD_TEST_PG_HOST"),
        port: var("SWITCHYARD_TEST_PG_PORT").parse().expect("port"),
        user: var("SWITCHYARD_TEST_PG_USER"),
        password: var("SWITCHYARD_TEST_PG_PASSWORD"),
        log: PathBuf::from(var("SWITCHYARD_TEST_PG_LOG")),
    }
}

impl Pg {
    /// A direct connection to one of the origin databases (not through Switchyard).
    pub async fn direct(&self, database: &str) -> Client {
        let (client, conn) = tokio_postgres::Config::new()
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .password(&self.password)
            .dbname(database)
            .connect(NoTls)
            .await
            .expect("direct connection to the test cluster");
        tokio::spawn(conn);
        client
    }

    pub fn url(&self, database: &str, port: u16) -> String {
        format!(
            "postgres://{}:{}@{}:{}/{}?sslmode=disable",
            self.user, self.password, self.host, port, database
        )
    }

    /// The origin's statement log so far (log_statement = all).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A running Switchyard over the test origins.
pub struct Harness {
    pub server: Server,
    pub dir: tempfile::TempDir,
    pub pg: Pg,
}

pub const ANALYST: (&str, &str) = ("analyst", "analyst-pw");
pub const CRM_ONLY: (&str, &str) = ("crm_only", "crm-pw");
pub const NORTH_REP: (&str, &str) = ("north_rep", "north-pw");
pub const CAPPED: (&str, &str) = ("capped", "capped-pw");
pub const STRICT: (&str, &str) = ("strict", "strict-pw");
/// Reads gold-tier MongoDB profiles only, without scores, names hashed.
pub const SHOP_REP: (&str, &str) = ("shop_rep", "shop-pw");
/// Reads sales.orders with a row cap of 1000 (step-graph pages).
pub const PAGER: (&str, &str) = ("pager", "pager-pw");

/// The config the tests run with; `extra_origins` and `extra_datasets` are YAML lines
/// appended to those sections.
pub fn config_text(pg: &Pg, extra_origins: &str, extra_datasets: &str) -> String {
    format!(
        r#"listen: 127.0.0.1:0
users:
  - {{ name: analyst, password: analyst-pw, roles: [reader] }}
  - {{ name: crm_only, password: crm-pw, roles: [crm] }}
  - {{ name: north_rep, password: north-pw, roles: [regional], attributes: {{ region: north }} }}
  - {{ name: capped, password: capped-pw, roles: [limited] }}
  - {{ name: strict, password: strict-pw, roles: [strict] }}
  - {{ name: shop_rep, password: shop-pw, roles: [shop_gold] }}
  - {{ name: crm_agent, password: crm-agent-pw, roles: [crm], tokens: ["{agent_token}"] }}
  - {{ name: pager, password: pager-pw, roles: [paged] }}
roles:
  reader: {{ allow: ["*"], deny: ["sales.secrets"] }}
  crm: {{ allow: ["crm.*"] }}
  # A regional sales rep: their region's customers only, no sign-up times, e-mails hashed.
  regional:
    allow: [sales.customers, sales.orders, crm.accounts, "inventory.*"]
    columns:
      sales.customers: {{ deny: [created_at], mask: {{ email: hash }} }}
      crm.accounts: {{ mask: {{ manager: redact }} }}
    row_filters:
      sales.customers: "region = user.region"
  limited:
    allow: ["sales.*", "inventory.*"]
    deny: [sales.secrets]
    guardrails:
      max_rows: 5
      max_result_bytes: 10kB
      statement_timeout: 1s
      max_cartesian_rows: 1000
      max_concurrent_statements: 1
  shop_gold:
    allow: [shop.profiles, sales.customers]
    columns:
      shop.profiles: {{ deny: [score], mask: {{ name: hash }} }}
    row_filters:
      shop.profiles: "tier = 'gold'"
  # Step-graph results over 1000 rows come in pages.
  paged: {{ allow: ["sales.orders"], guardrails: {{ max_rows: 1000 }} }}
  strict:
    allow: ["sales.orders"]
    guardrails: {{ max_rows: 5, on_max_rows: error }}
origins:
  sales:     {{ kind: postgres, url: "{sales}" }}
  inventory: {{ kind: postgres, url: "{inventory}" }}
  types:     {{ kind: postgres, url: "{types}" }}
  crm:       {{ kind: sqlite, path: crm.db }}
  lake:      {{ kind: files, path: lake }}
  docs:      {{ kind: mongodb, url: "{mongo}", database: shop, sample_size: 500 }}
{extra_origins}
datasets:
  sales:     {{ origin: sales, tables: [sales.customers, sales.orders, sales.secrets] }}
  inventory: {{ origin: inventory, tables: [inventory.products, inventory.stock] }}
  kinds:     {{ origin: types, tables: [kinds.all_types] }}
  crm:       {{ origin: crm, tables: [accounts] }}
  lake:      {{ origin: lake, tables: [visits, ratings, clicks] }}
  inventory.active_products: {{ origin: inventory, table: inventory.products, filters: {{ status: 1 }} }}
  sales.recent_orders:
    origin: sales
    query: "SELECT id, customer_id, amount FROM sales.orders WHERE ordered_at >= timestamptz '2024-02-20 00:00:00+00'"
  shop:      {{ origin: docs, tables: [profiles, events] }}
  shop.profile_cities:
    origin: docs
    table: profiles
    columns:
      - {{ name: customer_id, type: int4 }}
      - {{ name: city, type: text, path: address.city }}
      - {{ name: zip, type: text, path: address.zip }}
  shop.gold_profiles: {{ origin: docs, table: profiles, filters: {{ tier: gold }} }}
  shop.big_spenders:
    origin: docs
    table: events
    pipeline: [{{ "$match": {{ amount: {{ "$gte": {{ "$numberDecimal": "900" }} }} }} }}]
  shop.empty: {{ origin: docs, table: empty }}
{extra_datasets}
local: {{ path: data/local.db }}
"#,
        sales = pg.url("sales", pg.port),
        inventory = pg.url("inventory", pg.port),
        types = pg.url("types", pg.port),
        mongo = mongo_url(),
        agent_token = AGENT_TOKEN,
    )
}

/// The bearer token of user crm_agent (HTTP door).
pub const AGENT_TOKEN: &str = "tok-0123456789abcdef-agent";

/// This crate's folder, read when the test runs (cargo sets it): a test binary reused
/// from another checkout of the same target dir must not read that checkout's files.
pub fn tests_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The MongoDB-protocol test server (scripts/with-origins), database `shop`.
pub fn mongo_url() -> String {
    std::env::var("SWITCHYARD_TEST_MONGO_URL")
        .expect("SWITCHYARD_TEST_MONGO_URL is not set: run the tests through scripts/test")
}

/// Writes the SQLite and file origins into `dir`.
pub fn write_origin_files(dir: &Path) {
    let fixtures = tests_dir().join("fixtures");
    let crm = rusqlite::Connection::open(dir.join("crm.db")).unwrap();
    crm.execute_batch(&std::fs::read_to_string(fixtures.join("crm.sql")).unwrap())
        .unwrap();
    drop(crm);

    let lake = dir.join("lake");
    std::fs::create_dir_all(&lake).unwrap();
    let mut csv = String::from("customer_id,page,seconds\n");
    for i in 1..=300 {
        csv.push_str(&format!(
            "{},/page/{},{}\n",
            1 + i % 200,
            i % 7,
            (i * 13) % 90
        ));
    }
    std::fs::write(lake.join("visits.csv"), csv).unwrap();
    let mut ndjson = String::new();
    for i in 1..=50 {
        ndjson.push_str(&format!(
            "{{\"product_id\": {}, \"stars\": {}}}\n",
            i,
            1 + i % 5
        ));
    }
    std::fs::write(lake.join("ratings.ndjson"), ndjson).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Int64, false),
        Field::new("target", DataType::Utf8, false),
    ]));
    let ids: Vec<i64> = (1..=400).map(|i| 1 + i % 200).collect();
    let targets: Vec<String> = (1..=400).map(|i| format!("button-{}", i % 3)).collect();
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(targets)),
        ],
    )
    .unwrap();
    let file = std::fs::File::create(lake.join("clicks.parquet")).unwrap();
    let mut writer = ArrowWriter::try_new(file, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

impl Harness {
    pub async fn start() -> Harness {
        Self::start_with("", "", |_| {}).await
    }

    /// Starts Switchyard with extra config lines; `prepare` may add files to the dir first.
    pub async fn start_with(
        extra_origins: &str,
        extra_datasets: &str,
        prepare: impl FnOnce(&Path),
    ) -> Harness {
        Self::start_full("", extra_origins, extra_datasets, prepare).await
    }

    /// As [`Harness::start_with`], with `top` (e.g. a `tls:` line) before the generated config.
    pub async fn start_full(
        top: &str,
        extra_origins: &str,
        extra_datasets: &str,
        prepare: impl FnOnce(&Path),
    ) -> Harness {
        let pg = pg();
        let dir = tempfile::tempdir().unwrap();
        write_origin_files(dir.path());
        prepare(dir.path());
        let file = dir.path().join("switchyard.yaml");
        let text = format!("{top}{}", config_text(&pg, extra_origins, extra_datasets));
        std::fs::write(&file, text).unwrap();
        let config = switchyard_config::Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
        let server = switchyard::start(config).await.expect("server starts");
        Harness { server, dir, pg }
    }

    /// As [`Harness::start`], with every one-line dataset of a PostgreSQL, SQLite or
    /// MongoDB origin `mode: materialize` (the multi-line ones, the empty collection and
    /// gold_profiles stay federated), once
    /// every copy is taken.
    pub async fn start_materialized() -> Harness {
        let pg = pg();
        let dir = tempfile::tempdir().unwrap();
        write_origin_files(dir.path());
        let text: Vec<String> = config_text(&pg, "", "")
            .lines()
            .map(|l| {
                let copied = ["sales", "inventory", "types", "crm", "docs"]
                    .iter()
                    .any(|o| l.contains(&format!("{{ origin: {o},")))
                    // An empty collection has no columns to copy; gold_profiles'
                    // sampled schema types `tags` as text where some documents hold
                    // an array, so a full read of it fails (42804), copy or not.
                    && !l.contains("table: empty")
                    && !l.contains("shop.gold_profiles");
                match l.rfind(" }") {
                    Some(end) if copied && l.starts_with("  ") => {
                        format!("{}, mode: materialize{}", &l[..end], &l[end..])
                    }
                    _ => l.to_string(),
                }
            })
            .collect();
        let file = dir.path().join("switchyard.yaml");
        std::fs::write(&file, text.join("\n")).unwrap();
        let config = switchyard_config::Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
        let server = switchyard::start(config).await.expect("server starts");
        let h = Harness { server, dir, pg };
        let analyst = h.analyst().await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let states = rows(
                &analyst,
                "SELECT name, state, last_error FROM switchyard.datasets WHERE state <> 'ready'",
            )
            .await;
            if states.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "copies not ready after 120 s: {states:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        h
    }

    pub fn port(&self) -> u16 {
        self.server.addr.port()
    }

    pub fn config(&self, user: &str, password: &str) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host("127.0.0.1")
            .port(self.port())
            .user(user)
            .password(password)
            .dbname("switchyard");
        c
    }

    pub async fn connect(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Client, tokio_postgres::Error> {
        let (client, conn) = self.config(user, password).connect(NoTls).await?;
        tokio::spawn(conn);
        Ok(client)
    }

    pub async fn analyst(&self) -> Client {
        self.connect(ANALYST.0, ANALYST.1)
            .await
            .expect("analyst connects")
    }
}

/// A statement that runs for many seconds in Switchyard itself (no origin), for
/// timeout and concurrency tests.
pub const SLOW_QUERY: &str =
    "SELECT count(*) FROM generate_series(1, 2000000000) a(i) WHERE i % 7 = 3";

/// Runs psql (no psqlrc, stop at the first error) as `user` against Switchyard on
/// `port`; returns (success, stdout, stderr). Blocking: call it from spawn_blocking.
pub fn psql(port: u16, user: (&str, &str), args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new("psql")
        .env("PGPASSWORD", user.1)
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["-U", user.0, "switchyard"])
        .args(args)
        .output()
        .expect("psql is installed");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// The SQLSTATE of a failed statement.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

/// The message of a failed statement.
pub fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string())
}

/// All rows of a simple query as text.
pub async fn rows(client: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e} {:?}", e.as_db_error()));
    messages
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

/// The text of `EXPLAIN <sql>`, one plan line per line.
pub async fn explain(client: &Client, sql: &str) -> String {
    rows(client, &format!("EXPLAIN {sql}"))
        .await
        .into_iter()
        .map(|r| r.into_iter().flatten().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs a client program (`command`, given the Switchyard and reference PostgreSQL URLs
/// as its last two arguments) and asserts it reported exactly `checks` as `ok <check>`
/// lines and succeeded.
pub async fn run_client_checks(h: &Harness, mut command: std::process::Command, checks: &[&str]) {
    let proxy = format!(
        "postgresql://{}:{}@127.0.0.1:{}/switchyard",
        ANALYST.0,
        ANALYST.1,
        h.port()
    );
    let reference = format!(
        "postgresql://{}:{}@{}:{}/reference",
        h.pg.user, h.pg.password, h.pg.host, h.pg.port
    );
    command.arg(proxy).arg(reference);
    let out =
        tokio::task::spawn_blocking(move || command.output().expect("the client program runs"))
            .await
            .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let passed: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ok "))
        .collect();
    assert!(
        out.status.success() && passed == checks,
        "{}: passed {passed:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
}

/// Polls `check` every 20 ms until it returns `Some`; panics naming `what` when
/// `within` has passed. Tests wait for a condition this way, never by sleeping.
pub async fn wait_for<T, F, Fut>(what: &str, within: std::time::Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A TCP forwarder to a real origin: cutting it is the origin going away (new
/// connections refused, open ones broken), restoring it brings it back on the
/// same port. Lets a test take one origin down without stopping the shared cluster.
pub struct Forwarder {
    pub port: u16,
    target: u16,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Forwarder {
    /// Forwards a free local port to `target` (a port on 127.0.0.1).
    pub async fn start(target: u16) -> Forwarder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let f = Forwarder {
            port,
            target,
            task: std::sync::Mutex::new(None),
        };
        f.serve(listener);
        f
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let target = self.target;
        let task = tokio::spawn(async move {
            // Connections live in the set, so aborting this task breaks them all.
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
        });
        *self.task.lock().unwrap() = Some(task);
    }

    /// The origin goes away.
    pub async fn cut(&self) {
        let task = self.task.lock().unwrap().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// The origin comes back on the same port.
    pub async fn restore(&self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("the forwarder's port is free again");
        self.serve(listener);
    }
}
