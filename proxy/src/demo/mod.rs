//! `switchyard demo`: a self-contained data dir with a SQLite `crm` origin and a
//! Parquet/CSV `events` origin, a config for it, and the lines to paste.
//!
//! Rows come from a fixed-seed generator, so every run (and every machine) serves
//! the same data and the example queries give the same answers.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::parquet::arrow::ArrowWriter;

mod postgres;

pub use postgres::DemoPostgres;

/// Demo customers.
pub const CUSTOMERS: i64 = 2000;
/// Demo page views.
pub const PAGE_VIEWS: i64 = 5000;

/// Errors while writing the demo data.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// File system trouble.
    #[error("demo data dir {path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// SQLite trouble.
    #[error("demo crm.db: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Arrow/Parquet trouble.
    #[error("demo events: {0}")]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),
    /// Arrow trouble.
    #[error("demo events: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// The private PostgreSQL cluster could not be set up.
    #[error("demo PostgreSQL: {0}")]
    Postgres(String),
}

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const COUNTRIES: &[&str] = &["DE", "FR", "PT", "US", "BR", "JP", "IN", "NG"];
const TIERS: &[&str] = &["free", "pro", "gold"];
const PAGES: &[&str] = &["/", "/pricing", "/docs", "/blog", "/signup", "/dashboard"];
const PLANS: &[&str] = &["starter", "team", "enterprise"];
const STATUSES: &[&str] = &["open", "pending", "closed"];

fn io(path: &Path) -> impl Fn(std::io::Error) -> DemoError + '_ {
    move |source| DemoError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes the demo data and config into `dir` (replacing earlier demo files) and
/// returns the config file's path; `postgres` adds the private cluster's origins.
pub fn create(
    dir: &Path,
    listen: &str,
    http: &str,
    postgres: Option<&DemoPostgres>,
) -> Result<PathBuf, DemoError> {
    fs::create_dir_all(dir.join("events")).map_err(io(dir))?;
    write_crm(&dir.join("crm.db"))?;
    write_page_views(&dir.join("events/page_views.parquet"))?;
    write_signups(&dir.join("events/signups.csv"))?;
    let config = dir.join("switchyard.yaml");
    let (origins, datasets) = postgres.map(DemoPostgres::config_lines).unwrap_or_default();
    // The sync dataset field.visits is written by the demo user.
    let grants = if postgres.is_some() {
        r#", grants: [{ tables: ["field.*"], privileges: [select, insert, update, delete] }]"#
    } else {
        ""
    };
    fs::write(
        &config,
        config_text(listen, http, grants, &origins, &datasets),
    )
    .map_err(io(&config))?;
    Ok(config)
}

fn config_text(
    listen: &str,
    http: &str,
    grants: &str,
    extra_origins: &str,
    extra_datasets: &str,
) -> String {
    format!(
        r#"# Written by `switchyard demo`; edit freely and run `switchyard serve --config` on it.
listen: {listen}
# Step graphs (faz's federated steps) over REST: POST /v1/query.
http: {{ listen: {http} }}
users:
  - {{ name: demo, password: demo, roles: [analyst] }}
  - {{ name: agent, password: agent, roles: [support], attributes: {{ country: DE }} }}
roles:
  analyst: {{ allow: ["*"]{grants} }}
  # A support agent: German customers only, e-mails hashed, no sign-up dates.
  support:
    allow: ["crm.*", "events.*"]
    columns:
      crm.customers: {{ deny: [created_at], mask: {{ email: hash }} }}
    row_filters:
      crm.customers: "country = user.country"
audit: {{ path: data/audit.jsonl }}
origins:
  crm:    {{ kind: sqlite, path: crm.db }}
  events: {{ kind: files, path: events }}
{extra_origins}datasets:
  crm:    {{ origin: crm, tables: [customers, tickets] }}
  events: {{ origin: events, tables: [page_views, signups] }}
  crm.gold_customers: {{ origin: crm, table: customers, filters: {{ tier: gold }} }}
{extra_datasets}local: {{ path: data/local.db }}
"#
    )
}

fn write_crm(path: &Path) -> Result<(), DemoError> {
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", path.display()));
        if p.exists() {
            fs::remove_file(&p).map_err(io(&p))?;
        }
    }
    let mut conn = rusqlite::Connection::open(path)?;
    conn.execute_batch(
        "CREATE TABLE customers (
             id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT,
             country TEXT NOT NULL, tier TEXT NOT NULL, created_at TEXT NOT NULL);
         CREATE TABLE tickets (
             id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id),
             status TEXT NOT NULL, subject TEXT NOT NULL, opened_on TEXT NOT NULL);",
    )?;
    let mut rng = Rng(42);
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare("INSERT INTO customers VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
        for id in 1..=CUSTOMERS {
            let email = (id % 17 != 0).then(|| format!("customer{id}@example.com"));
            let created = format!("2025-{:02}-{:02}", 1 + rng.below(12), 1 + rng.below(28));
            insert.execute(rusqlite::params![
                id,
                format!("Customer {id}"),
                email,
                rng.pick(COUNTRIES),
                rng.pick(TIERS),
                created
            ])?;
        }
        let mut insert = tx.prepare("INSERT INTO tickets VALUES (?1, ?2, ?3, ?4, ?5)")?;
        for id in 1..=1200i64 {
            insert.execute(rusqlite::params![
                id,
                1 + rng.below(CUSTOMERS as u64) as i64,
                rng.pick(STATUSES),
                format!("Ticket {id}"),
                format!("2026-{:02}-{:02}", 1 + rng.below(10), 1 + rng.below(28))
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

fn write_page_views(path: &Path) -> Result<(), DemoError> {
    let mut rng = Rng(7);
    let n = PAGE_VIEWS as usize;
    let start = 1_767_225_600_000_000i64; // 2026-01-01T00:00:00Z in microseconds
    let mut customer = Vec::with_capacity(n);
    let mut page = Vec::with_capacity(n);
    let mut at = Vec::with_capacity(n);
    let mut duration = Vec::with_capacity(n);
    for i in 0..n as i64 {
        customer.push(1 + rng.below(CUSTOMERS as u64) as i64);
        page.push(rng.pick(PAGES));
        at.push(start + i * 600_000_000 + rng.below(600_000_000) as i64);
        duration.push(200 + rng.below(30_000) as i64);
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Int64, false),
        Field::new("page", DataType::Utf8, false),
        Field::new(
            "viewed_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("duration_ms", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from(customer)),
            Arc::new(StringArray::from(page)),
            Arc::new(TimestampMicrosecondArray::from(at).with_timezone("UTC")),
            Arc::new(Int64Array::from(duration)),
        ],
    )?;
    let file = fs::File::create(path).map_err(io(path))?;
    let mut writer = ArrowWriter::try_new(file, schema, None)?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(())
}

fn write_signups(path: &Path) -> Result<(), DemoError> {
    let mut rng = Rng(99);
    let mut text = String::from("customer_id,plan,signed_up_on\n");
    for id in 1..=CUSTOMERS {
        if rng.below(4) == 0 {
            continue;
        }
        let date = format!("2025-{:02}-{:02}", 1 + rng.below(12), 1 + rng.below(28));
        text.push_str(&format!("{id},{},{date}\n", rng.pick(PLANS)));
    }
    fs::write(path, text).map_err(io(path))
}

/// What `switchyard demo` prints once it listens; `postgres` is the demo
/// PostgreSQL when it runs.
pub fn banner(
    host: &str,
    port: u16,
    http_port: Option<u16>,
    postgres: Option<&DemoPostgres>,
) -> String {
    banner_with_audit(
        host,
        port,
        http_port,
        postgres,
        "switchyard-demo/data/audit.jsonl",
    )
}

/// The step-graph example: faz's complete example (a step, a second one linked to
/// it, a merge) as a `curl` command. Shell lines start with `$`.
fn http_banner(host: &str, http_port: u16, with_postgres: bool) -> String {
    let first = if with_postgres {
        r#"{"step_id": "s0", "database": "sales", "table": "orders", "language": "sql",
       "query": "SELECT customer_id, sum(quantity) AS items FROM orders GROUP BY customer_id ORDER BY items DESC, customer_id LIMIT 5"}"#
    } else {
        r#"{"step_id": "s0", "database": "events", "table": "page_views", "language": "sql",
       "query": "SELECT customer_id, count(*) AS items FROM page_views GROUP BY customer_id ORDER BY items DESC, customer_id LIMIT 5"}"#
    };
    format!(
        r#"
Step graphs over HTTP (faz's federated steps: each step checked like a statement, s1
reads only the customers s0 found, the merge joins them):
  $ curl -s -u demo:demo http://{host}:{http_port}/v1/query -H 'content-type: application/json' -d '{{
    "steps": [
      {first},
      {{"step_id": "s1", "database": "crm", "table": "customers", "language": "sql",
       "query": "SELECT id, name, country, tier FROM customers",
       "depends_on": ["s0"], "link_from": "customer_id", "link_to": "id"}}
    ],
    "merge": "SELECT s1.name, s1.country, s1.tier, s0.items FROM s0 JOIN s1 ON s0.customer_id = s1.id ORDER BY s0.items DESC, s1.name"
  }}'
"#
    )
}

/// The offline-write example: stop the origin, write, start it, see the replay.
/// Shell lines start with `$`.
fn offline_banner(pg: &DemoPostgres) -> String {
    format!(
        "\nOffline writes: field.visits is a sync copy of sales.visits (mode: sync). A write
commits locally at once and is replayed at the origin exactly once, also after the
origin was away. Stop the origin in a shell, write, start it again:
  $ {stop}
  INSERT INTO field.visits (id, customer_id, note) VALUES (100, 42, 'written offline');
  SELECT dataset, pending, last_error FROM switchyard.sync_queue;   -- 1 pending, origin down
  $ {start}
  SELECT dataset, pending, last_applied FROM switchyard.sync_queue; -- 0 pending: replayed
  SELECT id, note FROM sales.visits WHERE id = 100;                 -- read at the origin
",
        stop = pg.control_line("stop"),
        start = pg.control_line("start"),
    )
}

/// The banner, naming the audit log the demo writes.
pub fn banner_with_audit(
    host: &str,
    port: u16,
    http_port: Option<u16>,
    postgres: Option<&DemoPostgres>,
    audit_path: &str,
) -> String {
    let with_postgres = postgres.is_some();
    let http = http_port
        .map(|p| http_banner(host, p, with_postgres))
        .unwrap_or_default();
    let offline = postgres.map(offline_banner).unwrap_or_default();
    let postgres = match postgres.map(|p| p.port) {
        Some(pg_port) => format!(
            "\n  -- two PostgreSQL databases (sales, inventory) and the SQLite crm in one statement:\n  \
             SELECT c.country, p.category, sum(o.quantity * p.price) AS revenue\n    \
             FROM sales.orders o JOIN inventory.products p ON p.id = o.product_id\n    \
             JOIN crm.customers c ON c.id = o.customer_id\n   \
             WHERE c.tier = 'gold' AND p.category = 'tools' GROUP BY 1, 2 ORDER BY revenue DESC;\n\n  \
             -- sales_live.orders: a live local copy of sales.orders, kept by logical replication\n  \
             SELECT name, state, rows, position, lag_ms FROM switchyard.datasets;\n  \
             SELECT id, status FROM sales_live.orders WHERE id = 1;\n  \
             -- now UPDATE the row at the origin and run the SELECT again: the change is there\n  \
             --   psql -h 127.0.0.1 -p {pg_port} -U switchyard sales -c \"UPDATE orders SET status = 'returned' WHERE id = 1\"\n"
        ),
        None => "\n(PostgreSQL server binaries not found: the demo runs without its sales and inventory databases.)\n".to_string(),
    };
    format!(
        r#"Switchyard demo is up: origins crm (SQLite), events (Parquet + CSV){pg_origins}; user demo / password demo.

Connect:
  PGPASSWORD=demo psql -h {host} -p {port} -U demo switchyard

Try (cross-origin: crm is SQLite, events are files):
  SELECT c.country, count(*) AS views, round(avg(v.duration_ms)) AS avg_ms
    FROM crm.customers c JOIN events.page_views v ON v.customer_id = c.id
   WHERE c.tier = 'gold' GROUP BY c.country ORDER BY views DESC;

  SELECT s.plan, count(DISTINCT t.customer_id) AS customers_with_open_tickets
    FROM events.signups s JOIN crm.tickets t ON t.customer_id = s.customer_id
   WHERE t.status = 'open' GROUP BY s.plan ORDER BY s.plan;
{postgres}
Prefix a query with EXPLAIN to see the SQL each origin is sent. Ctrl-C stops.
{offline}
Governed access: log in as agent / agent (role support: German customers only, e-mails
hashed, created_at denied) and compare
  SELECT country, count(*), min(email) FROM crm.customers GROUP BY country;
  SELECT created_at FROM crm.customers;      -- ERROR 42501
{http}
Every statement is in the hash-chained audit log: switchyard audit verify {audit}"#,
        audit = audit_path,
        pg_origins = if with_postgres {
            ", sales and inventory (PostgreSQL)"
        } else {
            ""
        },
    )
}
