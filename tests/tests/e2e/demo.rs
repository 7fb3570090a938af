//! `switchyard demo`: the data it writes serves, and every query its banner prints
//! works when pasted (including the two-PostgreSQL-databases + SQLite join when the
//! machine has PostgreSQL's server binaries, as CI does).

use switchyard::demo::{self, DemoPostgres};

use crate::common;
use tokio_postgres::NoTls;

/// The SQL statements in the banner: everything between "Try" and "Prefix", split at `;`.
fn banner_queries(banner: &str) -> Vec<String> {
    let start = banner.find("Try").expect("banner has examples");
    let end = banner
        .find("Prefix")
        .expect("banner ends with the EXPLAIN hint");
    let body: String = banner[start..end]
        .lines()
        .skip(1)
        .filter(|l| !l.trim_start().starts_with("--") && !l.trim_start().starts_with('('))
        .collect::<Vec<_>>()
        .join("\n");
    body.split(';')
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_and_its_example_queries_work() {
    let postgres = tokio::task::spawn_blocking(DemoPostgres::start)
        .await
        .unwrap()
        .expect("demo PostgreSQL starts");
    assert!(
        postgres.is_some(),
        "the test machine has PostgreSQL server binaries"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = demo::create(dir.path(), "127.0.0.1:0", "127.0.0.1:0", postgres.as_ref()).unwrap();
    let config = switchyard_config::Config::load(&file).unwrap();
    let server = switchyard::start(config).await.unwrap();

    let mut pg = tokio_postgres::Config::new();
    pg.host("127.0.0.1")
        .port(server.addr.port())
        .user("demo")
        .password("demo")
        .dbname("switchyard");
    let (client, conn) = pg.connect(NoTls).await.expect("demo / demo logs in");
    tokio::spawn(conn);

    let n: i64 = client
        .query_one("SELECT count(*) FROM crm.customers", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, demo::CUSTOMERS);
    let n: i64 = client
        .query_one("SELECT count(*) FROM events.page_views", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, demo::PAGE_VIEWS);

    let pg_port = postgres.as_ref().map(|p| p.port);
    let http_port = server.http_addr.map(|a| a.port());
    let pg = postgres.as_ref();
    // The live copy the banner shows is taken at start.
    common::wait_for(
        "the live copy",
        std::time::Duration::from_secs(60),
        || async {
            let r = client
                .query_one(
                    "SELECT state FROM switchyard.datasets WHERE name = 'sales_live.orders'",
                    &[],
                )
                .await
                .ok()?;
            (r.get::<_, String>(0) == "streaming").then_some(())
        },
    )
    .await;
    let queries = banner_queries(&demo::banner(
        "127.0.0.1",
        server.addr.port(),
        http_port,
        pg,
    ));
    assert_eq!(queries.len(), 5, "{queries:?}");
    for q in &queries {
        let rows = client
            .simple_query(q)
            .await
            .unwrap_or_else(|e| panic!("{q}: {e:?}"));
        let data = rows
            .iter()
            .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
            .count();
        assert!(data > 0, "{q} returned no rows");
        let explain = client.simple_query(&format!("EXPLAIN {q}")).await.unwrap();
        assert!(!explain.is_empty());
    }
    // The banner's UPDATE at the origin appears through Switchyard.
    let banner = demo::banner("127.0.0.1", server.addr.port(), http_port, pg);
    let update = banner
        .lines()
        .find_map(|l| {
            l.split_once("-c \"")
                .map(|(_, u)| u.trim_end_matches('"').to_string())
        })
        .expect("the banner shows an UPDATE at the origin");
    let (origin, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(pg_port.unwrap())
        .user("switchyard")
        .dbname("sales")
        .connect(NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    origin.batch_execute(&update).await.unwrap();
    common::wait_for(
        "the UPDATE through the live copy",
        std::time::Duration::from_secs(30),
        || async {
            let r = client
                .query_one("SELECT status FROM sales_live.orders WHERE id = 1", &[])
                .await
                .ok()?;
            (r.get::<_, String>(0) == "returned").then_some(())
        },
    )
    .await;

    // Deterministic data: the same answer on every machine.
    let gold: i64 = client
        .query_one("SELECT count(*) FROM crm.gold_customers", &[])
        .await
        .unwrap()
        .get(0);
    let direct: i64 = client
        .query_one(
            "SELECT count(*) FROM crm.customers WHERE tier = 'gold'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(gold, direct);

    // The governed user the banner names: German customers only, e-mails hashed.
    assert!(banner.contains("agent / agent"), "{banner}");
    let mut agent_config = tokio_postgres::Config::new();
    agent_config
        .host("127.0.0.1")
        .port(server.addr.port())
        .user("agent")
        .password("agent")
        .dbname("switchyard");
    let (agent, conn) = agent_config
        .connect(NoTls)
        .await
        .expect("agent / agent logs in");
    tokio::spawn(conn);
    let by_country = agent
        .simple_query("SELECT country, count(*), min(email) FROM crm.customers GROUP BY country")
        .await
        .unwrap();
    let rows: Vec<_> = by_country
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get(0), Some("DE"));
    assert!(!rows[0].get(2).unwrap_or_default().contains('@'));
    let e = agent
        .simple_query("SELECT created_at FROM crm.customers")
        .await
        .expect_err("denied column");
    assert_eq!(e.code().map(|c| c.code()), Some("42501"));
    offline_write_as_the_banner_shows(&client, &banner, pg.unwrap()).await;
    step_graph_as_the_banner_shows(&banner);
    server.stop();
    let audit = dir.path().join("data/audit.jsonl");
    assert!(switchyard_safety::verify(&audit).expect("the demo's audit log verifies") > 5);
    drop(postgres);
}

/// The banner's offline-write example, line by line: its shell lines stop and start
/// the demo PostgreSQL, its statements run through Switchyard.
async fn offline_write_as_the_banner_shows(
    client: &tokio_postgres::Client,
    banner: &str,
    pg: &DemoPostgres,
) {
    let start = banner
        .find("Offline writes")
        .expect("the banner shows an offline write");
    let end = banner.find("Governed access").expect("banner order");
    let lines: Vec<&str> = banner[start..end]
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('$') || l.contains(';'))
        .collect();
    assert_eq!(lines.len(), 6, "{lines:?}");
    let pending = || async {
        let r = client
            .query_one(
                "SELECT pending FROM switchyard.sync_queue WHERE dataset = 'field.visits'",
                &[],
            )
            .await
            .ok()?;
        Some(r.get::<_, i64>(0))
    };
    for (i, line) in lines.iter().enumerate() {
        if let Some(shell) = line.strip_prefix('$') {
            let shell = shell.trim().to_string();
            let out = tokio::task::spawn_blocking(move || {
                std::process::Command::new("sh")
                    .args(["-c", &shell])
                    .output()
                    .unwrap()
            })
            .await
            .unwrap();
            if !out.status.success() {
                let log =
                    std::fs::read_to_string(pg.data_dir().join("postgres.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                panic!(
                    "{line}: {out:?}\nPostgreSQL's log ends:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            continue;
        }
        let sql = line.split(';').next().unwrap();
        match i {
            // The INSERT with the origin stopped: committed locally, queued.
            1 => client
                .batch_execute(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}")),
            2 => {
                let r = client.query_one(sql, &[]).await.unwrap();
                assert_eq!(r.get::<_, i64>(1), 1, "queued while the origin is down");
            }
            // After the start: replayed within the deadline, then at the origin.
            4 => {
                common::wait_for(
                    "the offline write replayed",
                    std::time::Duration::from_secs(60),
                    || async { (pending().await? == 0).then_some(()) },
                )
                .await;
            }
            5 => {
                let r = client
                    .query_one(sql, &[])
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
                assert_eq!(r.get::<_, String>(1), "written offline");
                let local = client
                    .query_one("SELECT note FROM field.visits WHERE id = 100", &[])
                    .await
                    .unwrap();
                assert_eq!(local.get::<_, String>(0), "written offline");
            }
            _ => panic!("unexpected line {i}: {line}"),
        }
    }
}

/// The banner's `curl` step graph, run by curl as shown: rows come back from the
/// PostgreSQL step linked to the SQLite step.
fn step_graph_as_the_banner_shows(banner: &str) {
    let start = banner
        .find("Step graphs over HTTP")
        .expect("the banner shows a step graph");
    let command: Vec<&str> = banner[start..]
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("$ curl"))
        .scan(false, |done, l| {
            if *done {
                return None;
            }
            *done = l.trim_end().ends_with("}'");
            Some(l)
        })
        .collect();
    let command = command.join("\n");
    let command = command.trim_start().trim_start_matches("$ ");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(command)
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "{command}: {out:?}");
    let envelope: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!(envelope["status"], "ok", "{envelope}");
    let rows = envelope["data"]["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 5, "{envelope}");
    assert!(rows
        .iter()
        .all(|r| r["name"].is_string() && r["items"].is_number()));
    assert_eq!(envelope["metadata"]["steps"][1]["rows_returned"], 5);
}
