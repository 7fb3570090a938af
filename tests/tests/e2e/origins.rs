//! Origins through the proxy: two PostgreSQL databases and a SQLite file in one
//! statement, each origin's part run at the origin with its own WHERE and columns;
//! files and the local store; a dead origin failing only its statements.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::common;
use crate::common::{rows, sqlstate, Harness};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

const THREE_ORIGIN_JOIN: &str = "\
SELECT c.region, a.tier, count(*) AS orders, sum(o.amount) AS total, max(p.price) AS top_price
  FROM sales.orders o
  JOIN sales.customers c ON c.id = o.customer_id
  JOIN inventory.products p ON p.id = o.product_id
  JOIN crm.accounts a ON a.customer_id = c.id
 WHERE o.status = 'paid' AND p.category = 'tools' AND a.tier = 'gold'
 GROUP BY c.region, a.tier
 ORDER BY c.region";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_across_two_postgres_databases_and_sqlite_matches_postgres() {
    let h = Harness::start().await;
    let c = h.analyst().await;
    let through = rows(&c, THREE_ORIGIN_JOIN).await;
    let reference = h.pg.direct("reference").await;
    // The reference database holds every origin's tables under the same names.
    let direct = rows(&reference, THREE_ORIGIN_JOIN).await;
    assert!(!direct.is_empty());
    assert_eq!(through, direct);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_each_origin_sql_with_its_where_and_columns() {
    let h = Harness::start().await;
    let c = h.analyst().await;
    let plan = common::explain(&c, THREE_ORIGIN_JOIN).await;
    let sql_lines: Vec<&str> = plan
        .lines()
        .filter(|l| l.contains("VirtualExecutionPlan"))
        .collect();
    // sales (orders ⨝ customers pushed whole as one statement), inventory, crm.
    assert_eq!(
        sql_lines.len(),
        3,
        "one remote statement per origin:\n{plan}"
    );
    let sales = sql_lines
        .iter()
        .find(|l| l.contains("orders"))
        .expect("sales part");
    assert!(
        sales.contains("JOIN"),
        "the same-database join runs at the origin: {sales}"
    );
    assert!(
        sales.contains("WHERE") && sales.contains("'paid'"),
        "sales filter pushed: {sales}"
    );
    assert!(
        !sales.contains("\"email\""),
        "unused columns are not fetched: {sales}"
    );
    let inventory = sql_lines
        .iter()
        .find(|l| l.contains("products"))
        .expect("inventory part");
    assert!(
        inventory.contains("WHERE") && inventory.contains("'tools'"),
        "inventory filter pushed: {inventory}"
    );
    assert!(
        !inventory.contains("\"sku\""),
        "unused columns are not fetched: {inventory}"
    );
    let crm = sql_lines
        .iter()
        .find(|l| l.contains("accounts"))
        .expect("crm part");
    assert!(
        crm.contains("WHERE") && crm.contains("'gold'"),
        "crm filter pushed: {crm}"
    );

    // The origins really received those statements.
    rows(&c, THREE_ORIGIN_JOIN).await;
    let log = h.pg.log_text();
    let sent: Vec<&str> = log
        .lines()
        .filter(|l| {
            (l.contains("statement: SELECT") || l.contains("execute")) && l.contains("\"products\"")
        })
        .collect();
    assert!(
        sent.iter().any(|l| l.contains("'tools'")),
        "inventory received its WHERE: {sent:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_origin_statement_runs_there_whole() {
    let h = Harness::start().await;
    let c = h.analyst().await;
    let sql = "SELECT o.status, count(*) FROM sales.orders o JOIN sales.customers c ON c.id = o.customer_id \
               WHERE c.region IN ('east', 'west') GROUP BY o.status ORDER BY o.status LIMIT 3";
    let text = common::explain(&c, sql).await;
    let remote: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("VirtualExecutionPlan"))
        .collect();
    assert_eq!(remote.len(), 1, "{text}");
    for part in [
        "JOIN", "GROUP BY", "ORDER BY", "LIMIT 3", "'east'", "'west'",
    ] {
        assert!(
            remote[0].contains(part),
            "{part} missing from {}",
            remote[0]
        );
    }
    let reference = h.pg.direct("reference").await;
    let expected = reference.query(sql, &[]).await.unwrap().len();
    assert!(expected > 0);
    assert_eq!(rows(&c, sql).await.len(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_and_query_datasets() {
    let h = Harness::start().await;
    let c = h.analyst().await;
    let reference = h.pg.direct("reference").await;
    let active: i64 = reference
        .query_one(
            "SELECT count(*) FROM inventory.products WHERE status = 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        rows(&c, "SELECT count(*) FROM inventory.active_products").await,
        vec![vec![Some(active.to_string())]]
    );
    let recent: i64 = reference
        .query_one("SELECT count(*) FROM sales.orders WHERE ordered_at >= timestamptz '2024-02-20 00:00:00+00' AND amount > 500", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        rows(
            &c,
            "SELECT count(*) FROM sales.recent_orders WHERE amount > 500"
        )
        .await,
        vec![vec![Some(recent.to_string())]]
    );
    let text = common::explain(&c, "SELECT id FROM sales.recent_orders WHERE amount > 500").await;
    assert!(
        text.contains("ordered_at >= "),
        "the dataset query is sent to the origin: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_origin_csv_ndjson_parquet_join_postgres() {
    let h = Harness::start().await;
    let c = h.analyst().await;
    assert_eq!(
        rows(&c, "SELECT count(*) FROM lake.visits").await,
        vec![vec![Some("300".into())]]
    );
    assert_eq!(
        rows(&c, "SELECT count(*) FROM lake.ratings").await,
        vec![vec![Some("50".into())]]
    );
    assert_eq!(
        rows(&c, "SELECT count(*) FROM lake.clicks").await,
        vec![vec![Some("400".into())]]
    );
    let joined = rows(
        &c,
        "SELECT p.category, avg(r.stars) FROM lake.ratings r JOIN inventory.products p ON p.id = r.product_id \
         WHERE p.category IS NOT NULL GROUP BY p.category ORDER BY p.category",
    )
    .await;
    assert_eq!(joined.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_store_tables_are_served() {
    let h = Harness::start_with("", "", |dir| {
        let conn = rusqlite::Connection::open(dir.join("data/local.db")).unwrap_or_else(|_| {
            std::fs::create_dir_all(dir.join("data")).unwrap();
            rusqlite::Connection::open(dir.join("data/local.db")).unwrap()
        });
        conn.execute_batch("CREATE TABLE notes (id INTEGER PRIMARY KEY, customer_id INTEGER, body TEXT); INSERT INTO notes VALUES (1, 3, 'called'), (2, 4, 'emailed');").unwrap();
    })
    .await;
    let c = h.analyst().await;
    let r = rows(&c, "SELECT n.body, c.name FROM local.notes n JOIN sales.customers c ON c.id = n.customer_id ORDER BY n.id").await;
    assert_eq!(
        r,
        vec![
            vec![Some("called".into()), Some("customer 3".into())],
            vec![Some("emailed".into()), Some("customer 4".into())]
        ]
    );
}

/// A TCP relay in front of the test cluster that can be cut and restored, so an
/// origin can die and come back without disturbing other tests.
struct Relay {
    addr: SocketAddr,
    target: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    async fn start(target: SocketAddr, addr: Option<SocketAddr>) -> Relay {
        let listener = TcpListener::bind(addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap()))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let inner = Arc::clone(&tasks);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let conn = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = (client.set_nodelay(true), server.set_nodelay(true));
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                inner.lock().await.push(conn);
            }
        });
        tasks.lock().await.push(accept);
        Relay {
            addr,
            target,
            tasks,
        }
    }

    /// Drops the listener and every relayed connection.
    async fn cut(&self) {
        let tasks: Vec<_> = self.tasks.lock().await.drain(..).collect();
        for t in &tasks {
            t.abort();
        }
        // An aborted task has dropped its sockets once awaiting it returns.
        for t in tasks {
            let _ = t.await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_origin_fails_only_its_statements_and_reconnects() {
    let pg = common::pg();
    let target: SocketAddr = format!("{}:{}", pg.host, pg.port).parse().unwrap();
    let relay = Relay::start(target, None).await;
    let origin = format!(
        "  flaky: {{ kind: postgres, url: \"postgres://{}:{}@127.0.0.1:{}/inventory?sslmode=disable\" }}",
        pg.user,
        pg.password,
        relay.addr.port()
    );
    let h = Harness::start_with(
        &origin,
        "  flaky: { origin: flaky, tables: [inventory.products] }",
        |_| {},
    )
    .await;
    let c = h.analyst().await;
    assert_eq!(
        rows(&c, "SELECT count(*) FROM flaky.products").await,
        vec![vec![Some("50".into())]]
    );

    relay.cut().await;
    let started = std::time::Instant::now();
    let e = c
        .simple_query("SELECT count(*) FROM flaky.products")
        .await
        .expect_err("origin is down");
    assert!(["08001", "08006"].contains(&sqlstate(&e).as_str()), "{e:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "fails fast, not after a pool timeout"
    );
    // Cross-origin statements that need it fail too; the same session and others keep working.
    let e = c
        .simple_query("SELECT count(*) FROM flaky.products p JOIN crm.accounts a ON a.id = p.id")
        .await
        .expect_err("needs the dead origin");
    assert!(["08001", "08006"].contains(&sqlstate(&e).as_str()), "{e:?}");
    assert_eq!(
        rows(&c, "SELECT count(*) FROM sales.orders").await,
        vec![vec![Some("3000".into())]]
    );
    let other = h.analyst().await;
    assert_eq!(
        rows(&other, "SELECT count(*) FROM inventory.products").await,
        vec![vec![Some("50".into())]]
    );

    // The origin comes back on the same address: the next statement reconnects.
    let _back = Relay::start(relay.target, Some(relay.addr)).await;
    assert_eq!(
        rows(&c, "SELECT count(*) FROM flaky.products").await,
        vec![vec![Some("50".into())]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_origin_at_start_does_not_stop_the_server() {
    let origin =
        "  gone: { kind: postgres, url: \"postgres://x:y@127.0.0.1:1/nothing?sslmode=disable\" }";
    let h = Harness::start_with(origin, "  gone: { origin: gone, tables: [t] }", |_| {}).await;
    let c = h.analyst().await;
    let e = c
        .simple_query("SELECT * FROM gone.t")
        .await
        .expect_err("origin is down");
    assert_eq!(sqlstate(&e), "08001", "{e:?}");
    assert!(
        common::message(&e).contains("gone"),
        "names the origin: {e:?}"
    );
    assert_eq!(
        rows(&c, "SELECT count(*) FROM crm.accounts").await,
        vec![vec![Some("200".into())]]
    );
}

/// A timestamptz literal keeps its offset at an origin whose TimeZone is not UTC
/// (it used to be sent as `CAST('...+00:00' AS TIMESTAMP)`, read in New York time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamptz_literals_mean_the_same_instant_at_an_origin_in_another_time_zone() {
    let (sales, h) = new_york_origin().await;
    let c = h.analyst().await;
    // sales.customers were created hourly from 2024-01-01 01:00 UTC (200 rows).
    for cutoff in ["2024-01-05 10:30:00+00", "2024-01-03 03:00:00-05"] {
        let direct = rows(
            &sales,
            &format!(
                "SELECT count(*) FROM sales.customers WHERE created_at > timestamptz '{cutoff}'"
            ),
        )
        .await;
        let through = rows(
            &c,
            &format!(
                "SELECT count(*) FROM sales_ny.customers WHERE created_at > timestamptz '{cutoff}'"
            ),
        )
        .await;
        let plan = common::explain(
            &c,
            &format!(
                "SELECT count(*) FROM sales_ny.customers WHERE created_at > timestamptz '{cutoff}'"
            ),
        )
        .await;
        assert_eq!(through, direct, "cutoff {cutoff}: {plan}");
    }
}

/// Zone-dependent answers as PostgreSQL gives them, whatever the origin role's
/// defaults (another TimeZone, DateStyle, IntervalStyle): at the origin in a UTC
/// session, and in a client session in a third zone (Asia/Kolkata: +05:30, so dates
/// and hours move), computed here then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_dependent_answers_follow_the_client_session_not_the_origin_role() {
    let (sales, h) = new_york_origin().await;
    let c = h.analyst().await;
    let queries = [
        "SELECT created_at::date AS d, count(*) AS n FROM {t} GROUP BY 1 ORDER BY 1",
        "SELECT extract(hour FROM created_at) AS h, count(*) AS n FROM {t} GROUP BY 1 ORDER BY 1",
        "SELECT date_trunc('day', created_at) AS d, count(*) AS n FROM {t} GROUP BY 1 ORDER BY 1",
        "SELECT id, created_at, created_at::timestamp AS local, created_at::text AS t, \
                (created_at + interval '1 day 2 hours')::text AS later \
           FROM {t} ORDER BY id LIMIT 5",
        "SELECT count(*) FROM {t} WHERE created_at < timestamptz '2024-01-03 00:00'",
        "SELECT count(*) FROM {t} WHERE created_at::date = date '2024-01-02'",
        "SELECT min(created_at)::text, max(created_at)::text FROM {t}",
        "SELECT (created_at - timestamptz '2024-01-01 00:00')::text AS since FROM {t} ORDER BY id LIMIT 3",
    ];
    for zone in ["UTC", "Asia/Kolkata", "America/New_York"] {
        c.batch_execute(&format!("SET TimeZone = '{zone}'"))
            .await
            .unwrap();
        sales
            .batch_execute(&format!("SET TimeZone = '{zone}'"))
            .await
            .unwrap();
        for q in queries {
            let through = rows(&c, &q.replace("{t}", "sales_ny.customers")).await;
            let direct = rows(&sales, &q.replace("{t}", "sales.customers")).await;
            let plan = common::explain(&c, &q.replace("{t}", "sales_ny.customers")).await;
            assert_eq!(through, direct, "TimeZone {zone}: {q}\n{plan}");
        }
    }
    // SHOW and RESET as PostgreSQL answers them; an unknown zone is 22023.
    assert_eq!(
        rows(&c, "SHOW TimeZone").await,
        vec![vec![Some("America/New_York".into())]]
    );
    c.batch_execute("RESET TimeZone").await.unwrap();
    assert_eq!(
        rows(&c, "SHOW TimeZone").await,
        vec![vec![Some("UTC".into())]]
    );
    let e = c
        .batch_execute("SET TimeZone = 'Mars/Olympus'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "22023", "{e}");
}

/// Switchyard with `sales_ny.customers` read through an origin role whose defaults
/// are New York time, `SQL, DMY`, `sql_standard` intervals and 0 float digits; and
/// a direct connection to the sales database.
async fn new_york_origin() -> (tokio_postgres::Client, Harness) {
    let pg = common::pg();
    let sales = pg.direct("sales").await;
    sales
        .batch_execute(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tz_ny') THEN
                 CREATE ROLE tz_ny LOGIN PASSWORD 'tz-pw';
               END IF; END $$;
             ALTER ROLE tz_ny SET timezone = 'America/New_York';
             ALTER ROLE tz_ny SET datestyle = 'SQL, DMY';
             ALTER ROLE tz_ny SET intervalstyle = 'sql_standard';
             ALTER ROLE tz_ny SET extra_float_digits = -3;
             GRANT USAGE ON SCHEMA sales TO tz_ny;
             GRANT SELECT ON ALL TABLES IN SCHEMA sales TO tz_ny;",
        )
        .await
        .unwrap();
    let url = format!(
        "postgres://tz_ny:tz-pw@{}:{}/sales?sslmode=disable",
        pg.host, pg.port
    );
    let h = Harness::start_with(
        &format!("  sales_ny: {{ kind: postgres, url: \"{url}\" }}"),
        "  sales_ny: { origin: sales_ny, tables: [sales.customers] }",
        |_| {},
    )
    .await;
    (sales, h)
}
