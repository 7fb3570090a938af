//! Materialized datasets: copied from a real PostgreSQL origin into the local
//! store, read from the copy (equal to the federated read, type for type), served
//! while the origin is down, refreshed on request, shown in `switchyard.datasets`,
//! and kept whole when the local store is full.

use std::time::Duration;

use tokio_postgres::Client;

use crate::common::{self, explain, rows, sqlstate, wait_for, Forwarder, Pg};

const KEEPER: (&str, &str) = ("keeper", "keeper-pw");
const VIEWER: (&str, &str) = ("viewer", "viewer-pw");

/// A Switchyard whose `types` origin is reached through `forwarder`.
struct Setup {
    server: switchyard::Server,
    _dir: tempfile::TempDir,
    pg: Pg,
}

/// Creates `matz.items` (id, name, price) at the types database with `n` rows.
async fn reset_items(pg: &Pg, n: i32) {
    let origin = pg.direct("types").await;
    origin
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS matz;
             DROP TABLE IF EXISTS matz.items;
             CREATE TABLE matz.items (id int PRIMARY KEY, name text, price numeric(10,2));
             INSERT INTO matz.items SELECT i, 'item ' || i, i * 1.25 FROM generate_series(1, {n}) i;"
        ))
        .await
        .unwrap();
}

async fn start(forwarder: &Forwarder, local: &str) -> Setup {
    let pg = common::pg();
    let dir = tempfile::tempdir().unwrap();
    let via = pg.url("types", forwarder.port);
    let yaml = format!(
        r#"listen: 127.0.0.1:0
users:
  - {{ name: keeper, password: keeper-pw, roles: [keeper] }}
  - {{ name: viewer, password: viewer-pw, roles: [viewer] }}
roles:
  keeper: {{ grants: [{{ tables: ["*"], privileges: [select, update] }}] }}
  viewer: {{ allow: ["copies.*", "kinds.*", "sales.*"] }}
origins:
  types: {{ kind: postgres, url: "{via}" }}
  sales: {{ kind: postgres, url: "{sales}" }}
  docs: {{ kind: mongodb, url: "{mongo}", database: shop, sample_size: 500 }}
datasets:
  kinds: {{ origin: types, tables: [kinds.all_types] }}
  copies.all_types: {{ origin: types, table: kinds.all_types, mode: materialize }}
  copies.items: {{ origin: types, table: matz.items, mode: materialize }}
  copies.cheap: {{ origin: types, query: "SELECT id, name FROM matz.items WHERE price < 5", mode: materialize }}
  sales: {{ origin: sales, tables: [sales.customers] }}
  shop: {{ origin: docs, tables: [profiles] }}
  copies.profiles: {{ origin: docs, table: profiles, mode: materialize }}
local: {local}
"#,
        sales = pg.url("sales", pg.port),
        mongo = common::mongo_url(),
    );
    let file = dir.path().join("switchyard.yaml");
    std::fs::write(&file, yaml).unwrap();
    let config = switchyard_config::Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    let server = switchyard::start(config).await.expect("server starts");
    Setup {
        server,
        _dir: dir,
        pg,
    }
}

impl Setup {
    async fn connect(&self, user: (&str, &str)) -> Client {
        let (client, conn) = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(self.server.addr.port())
            .user(user.0)
            .password(user.1)
            .dbname("switchyard")
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    }

    /// Waits until `dataset`'s state is `state`; returns its status row.
    async fn wait_state(&self, client: &Client, dataset: &str, state: &str) -> Vec<Option<String>> {
        wait_for(
            &format!("{dataset} to be {state}"),
            Duration::from_secs(30),
            || async {
                let sql = format!(
                    "SELECT state, rows, last_error FROM switchyard.datasets WHERE name = '{dataset}'"
                );
                let r = rows(client, &sql).await;
                r.into_iter()
                    .next()
                    .filter(|r| r[0].as_deref() == Some(state))
            },
        )
        .await
    }
}

/// Column names and type OIDs as the extended protocol describes them.
async fn described(client: &Client, sql: &str) -> Vec<(String, u32)> {
    let stmt = client.prepare(sql).await.unwrap();
    stmt.columns()
        .iter()
        .map(|c| (c.name().to_string(), c.type_().oid()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_reads_back_equal_to_the_federated_dataset_and_says_so_in_explain() {
    let forwarder = Forwarder::start(common::pg().port).await;
    reset_items(&common::pg(), 10).await;
    let s = start(&forwarder, "{ path: data/local.db }").await;
    let keeper = s.connect(KEEPER).await;
    let status = s.wait_state(&keeper, "copies.all_types", "ready").await;
    assert_eq!(status[1].as_deref(), Some("3"), "{status:?}");

    // Every type of kinds.all_types, value for value and type for type.
    let federated = rows(&keeper, "SELECT * FROM kinds.all_types ORDER BY id").await;
    let copied = rows(&keeper, "SELECT * FROM copies.all_types ORDER BY id").await;
    assert_eq!(copied, federated);
    assert_eq!(
        described(&keeper, "SELECT * FROM copies.all_types").await,
        described(&keeper, "SELECT * FROM kinds.all_types").await
    );

    // Filters, projection and limit run in the local store; the origin is not read.
    let plan = explain(
        &keeper,
        "SELECT id, t FROM copies.all_types WHERE id >= 2 AND b = false LIMIT 5",
    )
    .await;
    assert!(
        plan.contains("LocalCopyExec: dataset=copies.all_types"),
        "{plan}"
    );
    assert!(
        plan.contains("\"id\" >= 2") && plan.contains("(NOT \"b\" = 1)"),
        "{plan}"
    );
    let picked = rows(
        &keeper,
        "SELECT id, t FROM copies.all_types WHERE id >= 2 AND b = false",
    )
    .await;
    assert_eq!(
        picked,
        vec![vec![Some("3".into()), Some("a\"b\\c,{}".into())]]
    );

    // A numeric filter at the copy's own precision, and an aggregate over it.
    s.wait_state(&keeper, "copies.items", "ready").await;
    let sum = rows(
        &keeper,
        "SELECT count(*), sum(price) FROM copies.items WHERE price > 5.00",
    )
    .await;
    let direct = s.pg.direct("types").await;
    let want = direct
        .query_one(
            "SELECT count(*)::text, sum(price)::text FROM matz.items WHERE price > 5.00",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(sum, vec![vec![Some(want.get(0)), Some(want.get(1))]]);

    // A query dataset is copied as its query's result.
    s.wait_state(&keeper, "copies.cheap", "ready").await;
    let cheap = rows(&keeper, "SELECT id FROM copies.cheap ORDER BY id").await;
    assert_eq!(
        cheap,
        (1..=3)
            .map(|i| vec![Some(i.to_string())])
            .collect::<Vec<_>>()
    );

    // A MongoDB collection, nested documents and decimals included.
    s.wait_state(&keeper, "copies.profiles", "ready").await;
    let federated = rows(&keeper, "SELECT * FROM shop.profiles ORDER BY 1").await;
    assert!(federated.len() > 10, "{}", federated.len());
    assert_eq!(
        rows(&keeper, "SELECT * FROM copies.profiles ORDER BY 1").await,
        federated
    );
    assert_eq!(
        described(&keeper, "SELECT * FROM copies.profiles").await,
        described(&keeper, "SELECT * FROM shop.profiles").await
    );
    s.server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_origin_down_the_copy_still_answers_and_joins_reach_only_live_origins() {
    let forwarder = Forwarder::start(common::pg().port).await;
    reset_items(&common::pg(), 10).await;
    let s = start(&forwarder, "{ path: data/local.db }").await;
    let viewer = s.connect(VIEWER).await;
    let keeper = s.connect(KEEPER).await;
    s.wait_state(&keeper, "copies.items", "ready").await;
    let before = rows(
        &viewer,
        "SELECT id, name, price FROM copies.items ORDER BY id",
    )
    .await;
    assert_eq!(before.len(), 10);

    forwarder.cut().await;
    // Federated reads of that origin fail; the copy answers as before.
    let e = viewer
        .simple_query("SELECT count(*) FROM kinds.all_types")
        .await
        .unwrap_err();
    assert!(sqlstate(&e).starts_with("08"), "{e:?}");
    assert_eq!(
        rows(
            &viewer,
            "SELECT id, name, price FROM copies.items ORDER BY id"
        )
        .await,
        before
    );
    // Joined with a dataset of another (live) origin: only that origin is read.
    let joined = rows(
        &viewer,
        "SELECT c.id, i.name FROM sales.customers c JOIN copies.items i ON i.id = c.id ORDER BY c.id LIMIT 2",
    )
    .await;
    assert_eq!(joined.len(), 2, "{joined:?}");
    // psql, as a user would.
    let port = s.server.addr.port();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        common::psql(
            port,
            VIEWER,
            &["-At", "-c", "SELECT sum(price) FROM copies.items"],
        )
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "68.75");
    // pgjdbc (extended protocol, a bound parameter) and psycopg 3.
    let work = s._dir.path().join("java");
    std::fs::create_dir_all(&work).unwrap();
    let jdbc = tokio::task::spawn_blocking(move || {
        crate::jdbc::run_program_on("OfflineCopy", port, VIEWER, "switchyard", &work)
    })
    .await
    .unwrap();
    assert_eq!(jdbc.trim(), "count 10 sum 68.75");
    let python = std::env::var("SWITCHYARD_TEST_PYTHON")
        .expect("SWITCHYARD_TEST_PYTHON is not set: run the tests through scripts/test");
    let script = format!(
        "import psycopg\n\
         with psycopg.connect('postgresql://viewer:viewer-pw@127.0.0.1:{port}/switchyard') as c:\n\
         \x20   print(c.execute('SELECT count(*), sum(price) FROM copies.items WHERE id > %s', [0]).fetchone())\n"
    );
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args(["-c", &script])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "(10, Decimal('68.75'))"
    );

    // A refresh while the origin is down fails with the origin's state, and the
    // copy stays as it was.
    let e = keeper
        .simple_query("REFRESH MATERIALIZED VIEW copies.items")
        .await
        .unwrap_err();
    assert!(sqlstate(&e).starts_with("08"), "{e:?}");
    let down = s.wait_state(&keeper, "copies.items", "origin down").await;
    assert!(
        down[2].as_deref().unwrap_or_default().contains("(08"),
        "{down:?}"
    );
    assert_eq!(
        rows(&viewer, "SELECT count(*) FROM copies.items").await,
        vec![vec![Some("10".into())]]
    );

    // Back up: the next attempt (backoff) takes a copy again.
    forwarder.restore().await;
    s.wait_state(&keeper, "copies.items", "ready").await;
    s.server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_takes_a_new_copy_for_the_roles_allowed_to() {
    let forwarder = Forwarder::start(common::pg().port).await;
    reset_items(&common::pg(), 10).await;
    let s = start(&forwarder, "{ path: data/local.db }").await;
    let keeper = s.connect(KEEPER).await;
    let viewer = s.connect(VIEWER).await;
    s.wait_state(&keeper, "copies.items", "ready").await;
    let direct = s.pg.direct("types").await;
    direct
        .batch_execute(
            "INSERT INTO matz.items VALUES (11, 'new', 2.00); DELETE FROM matz.items WHERE id = 1",
        )
        .await
        .unwrap();
    // The copy is as it was taken, until refreshed.
    assert_eq!(
        rows(&viewer, "SELECT count(*), min(id) FROM copies.items").await,
        vec![vec![Some("10".into()), Some("1".into())]]
    );

    // Simple protocol, as psql sends it: the command tag is PostgreSQL's.
    let done = keeper
        .simple_query("REFRESH MATERIALIZED VIEW copies.items")
        .await
        .unwrap();
    assert!(
        done.iter()
            .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::CommandComplete(_))),
        "{done:?}"
    );
    assert_eq!(
        rows(
            &viewer,
            "SELECT count(*), min(id), max(id) FROM copies.items"
        )
        .await,
        vec![vec![Some("10".into()), Some("2".into()), Some("11".into())]]
    );
    // Extended protocol (tokio-postgres's execute), CONCURRENTLY accepted.
    direct
        .batch_execute("DELETE FROM matz.items WHERE id = 2")
        .await
        .unwrap();
    keeper
        .execute("REFRESH MATERIALIZED VIEW CONCURRENTLY copies.items", &[])
        .await
        .unwrap();
    assert_eq!(
        rows(&viewer, "SELECT count(*) FROM copies.items").await,
        vec![vec![Some("9".into())]]
    );

    // Who may not, and what is not a materialized dataset.
    let e = viewer
        .simple_query("REFRESH MATERIALIZED VIEW copies.items")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    let e = keeper
        .simple_query("REFRESH MATERIALIZED VIEW kinds.all_types")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42809", "{e:?}");
    let e = keeper
        .simple_query("REFRESH MATERIALIZED VIEW copies.nothing")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42P01", "{e:?}");
    let e = keeper
        .simple_query("REFRESH MATERIALIZED VIEW copies.items WITH NO DATA")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "0A000", "{e:?}");

    // The status table is for roles granted it: the viewer neither lists nor reads it.
    let e = viewer
        .simple_query("SELECT * FROM switchyard.datasets")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    let port = s.server.addr.port();
    let listed = |user: (&'static str, &'static str)| {
        tokio::task::spawn_blocking(move || common::psql(port, user, &["-c", "\\dt switchyard.*"]))
    };
    let (_, as_viewer, _) = listed(VIEWER).await.unwrap();
    let (ok, as_keeper, err) = listed(KEEPER).await.unwrap();
    assert!(ok, "{err}");
    assert!(
        as_keeper.contains("datasets") && !as_viewer.contains("datasets"),
        "{as_keeper}\n{as_viewer}"
    );
    let status = rows(
        &keeper,
        "SELECT name, mode, state, rows FROM switchyard.datasets WHERE name <> 'copies.profiles' ORDER BY name",
    )
    .await;
    let want: Vec<Vec<Option<String>>> = [
        ("copies.all_types", "3"),
        ("copies.cheap", "3"),
        ("copies.items", "9"),
    ]
    .iter()
    .map(|(n, r)| {
        vec![
            Some(n.to_string()),
            Some("materialize".into()),
            Some("ready".into()),
            Some(r.to_string()),
        ]
    })
    .collect();
    // copies.cheap was taken before the changes; only items was refreshed.
    assert_eq!(status, want);
    s.server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_down_at_start_serves_nothing_until_the_first_copy_then_a_full_store_keeps_the_old_copy(
) {
    let forwarder = Forwarder::start(common::pg().port).await;
    reset_items(&common::pg(), 10).await;
    forwarder.cut().await;
    // 512 kB: the first copies fit, a copy of 60 000 items does not.
    let s = start(&forwarder, "{ path: data/local.db, max_size: 512kB }").await;
    let keeper = s.connect(KEEPER).await;
    let down = s.wait_state(&keeper, "copies.items", "origin down").await;
    assert!(down[1].is_none(), "no copy yet: {down:?}");
    let e = keeper
        .simple_query("SELECT count(*) FROM copies.items")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "55000", "{e:?}");
    assert!(common::message(&e).contains("origin down"), "{e:?}");

    forwarder.restore().await;
    s.wait_state(&keeper, "copies.items", "ready").await;
    assert_eq!(
        rows(&keeper, "SELECT count(*) FROM copies.items").await,
        vec![vec![Some("10".into())]]
    );

    reset_items(&s.pg, 60_000).await;
    let e = keeper
        .simple_query("REFRESH MATERIALIZED VIEW copies.items")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "53100", "{e:?}");
    let failed = s.wait_state(&keeper, "copies.items", "error").await;
    assert_eq!(
        failed[1].as_deref(),
        Some("10"),
        "the old copy is kept: {failed:?}"
    );
    assert_eq!(
        rows(&keeper, "SELECT count(*), max(id) FROM copies.items").await,
        vec![vec![Some("10".into()), Some("10".into())]]
    );
    s.server.stop();
}

/// The `switchyard` binary next to this test binary (cargo builds it for the proxy's
/// own integration tests).
pub(crate) fn switchyard_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("switchyard"))
        .unwrap();
    assert!(
        bin.is_file(),
        "{} is missing: run the suite with scripts/test",
        bin.display()
    );
    bin
}

/// `switchyard serve` as its own process, to be killed with SIGKILL.
pub(crate) fn serve(config: &std::path::Path) -> std::process::Child {
    std::process::Command::new(switchyard_binary())
        .args(["serve", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

pub(crate) async fn connect_port(port: u16, user: (&str, &str)) -> Option<Client> {
    let (client, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user(user.0)
        .password(user.1)
        .dbname("switchyard")
        .connect(tokio_postgres::NoTls)
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(client)
}

/// (state, rows, snapshot_rows) of copies.items, once the server answers.
async fn items_status(port: u16) -> Option<(String, Option<i64>, Option<i64>)> {
    let c = connect_port(port, KEEPER).await?;
    let r = c
        .query_one(
            "SELECT state, rows, snapshot_rows FROM switchyard.datasets WHERE name = 'copies.items'",
            &[],
        )
        .await
        .ok()?;
    Some((r.get(0), r.get(1), r.get(2)))
}

/// Kills `serve` with SIGKILL once its copy of items has written more than `rows`.
async fn kill_mid_copy(child: &mut std::process::Child, port: u16, rows: i64) {
    wait_for("a copy under way", Duration::from_secs(60), || async {
        match items_status(port).await {
            Some((_, _, Some(n))) if n > rows => Some(()),
            _ => None,
        }
    })
    .await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

/// count, sum(price) of the items at the origin and through the copy.
async fn counted(pg: &Pg, port: u16) -> (String, String) {
    let origin = pg.direct("types").await;
    let want = origin
        .query_one(
            "SELECT count(*)::text, sum(price)::text FROM matz.items",
            &[],
        )
        .await
        .unwrap();
    let c = connect_port(port, KEEPER).await.unwrap();
    let got = rows(&c, "SELECT count(*), sum(price) FROM copies.items").await;
    assert_eq!(
        got,
        vec![vec![Some(want.get(0)), Some(want.get(1))]],
        "0 lost, 0 doubled"
    );
    (want.get(0), want.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_copy_loses_nothing_and_doubles_nothing() {
    let pg = common::pg();
    reset_items(&pg, 1_000_000).await;
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let yaml = format!(
        r#"listen: 127.0.0.1:{port}
users: [ {{ name: keeper, password: keeper-pw, roles: [keeper] }} ]
roles: {{ keeper: {{ grants: [{{ tables: ["*"], privileges: [select, update] }}] }} }}
origins: {{ types: {{ kind: postgres, url: "{url}" }} }}
datasets:
  copies.items: {{ origin: types, table: matz.items, mode: materialize }}
local: {{ path: data/local.db }}
"#,
        url = pg.url("types", pg.port),
    );
    let file = dir.path().join("switchyard.yaml");
    std::fs::write(&file, yaml).unwrap();
    let store = dir.path().join("data/local.db");
    let copy_tables = || {
        let c = rusqlite::Connection::open(&store).unwrap();
        let n: i64 = c
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name LIKE '\\_switchyard\\_copy\\_%' ESCAPE '\\'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        n
    };

    // Killed during the first copy: nothing is served, and the next start copies whole.
    let mut child = serve(&file);
    kill_mid_copy(&mut child, port, 100_000).await;
    assert_eq!(
        copy_tables(),
        1,
        "the unfinished copy's table is left behind"
    );
    let mut child = serve(&file);
    wait_for("the first copy", Duration::from_secs(120), || async {
        matches!(items_status(port).await, Some((s, _, _)) if s == "ready").then_some(())
    })
    .await;
    assert_eq!(copy_tables(), 1, "the unfinished copy was dropped at start");
    counted(&pg, port).await;

    // Killed while refreshing: the old copy is served whole before, during and
    // after, and the next start's copy replaces it whole.
    origin_double(&pg).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let mut child = serve(&file);
    let during = wait_for(
        "the old copy served while refreshing",
        Duration::from_secs(60),
        || async {
            let c = connect_port(port, KEEPER).await?;
            let r = c
                .query_one("SELECT count(*) FROM copies.items", &[])
                .await
                .ok()?;
            Some(r.get::<_, i64>(0))
        },
    )
    .await;
    assert_eq!(during, 1_000_000);
    kill_mid_copy(&mut child, port, 100_000).await;
    assert_eq!(copy_tables(), 2, "the old copy and the unfinished one");
    let mut child = serve(&file);
    let c = wait_for("the server", Duration::from_secs(30), || {
        connect_port(port, KEEPER)
    })
    .await;
    assert_eq!(
        rows(&c, "SELECT count(*) FROM copies.items").await,
        vec![vec![Some("1000000".into())]]
    );
    wait_for("the new copy", Duration::from_secs(120), || async {
        matches!(items_status(port).await, Some((s, Some(2_000_000), _)) if s == "ready")
            .then_some(())
    })
    .await;
    counted(&pg, port).await;
    child.kill().unwrap();
    child.wait().unwrap();
}

async fn origin_double(pg: &Pg) {
    pg.direct("types")
        .await
        .batch_execute(
            "INSERT INTO matz.items SELECT i, 'item ' || i, i * 1.25 FROM generate_series(1000001, 2000000) i",
        )
        .await
        .unwrap();
}
