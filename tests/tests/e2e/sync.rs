//! `mode: sync` over a real PostgreSQL origin (and a MongoDB one) reached through a forwarder that
//! the tests cut: writes made while the origin is away are committed locally,
//! queued, and replayed exactly once when it returns (checked by count and
//! checksum against the expected state, and by the origin's record of applied
//! entries); each conflict policy meets a scripted conflict of every kind, and an
//! origin-side unique violation sets its entry aside; each outcome is in
//! `switchyard.conflicts`.

use std::time::Duration;

use tokio_postgres::Client;

use crate::common::{self, rows, wait_for, Forwarder, Pg};

const WRITER: (&str, &str) = ("writer", "writer-pw");

/// Recreates the `sync` schema at the types database, drops what earlier runs
/// left (slots, publications, the applied-entries table).
async fn reset(pg: &Pg, setup: &str) -> Client {
    let origin = pg.direct("types").await;
    let ours = "slot_name LIKE 'sy\\_sync\\_%'";
    wait_for("earlier slots to go", Duration::from_secs(30), || async {
        origin
            .batch_execute(&format!(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE {ours} AND active_pid IS NOT NULL;
                 SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE {ours};"
            ))
            .await
            .ok()
    })
    .await;
    origin
        .batch_execute(&format!(
            "DO $$ DECLARE p text; BEGIN
               FOR p IN SELECT pubname FROM pg_publication WHERE pubname LIKE 'sy\\_sync\\_%' LOOP
                 EXECUTE format('DROP PUBLICATION %I', p);
               END LOOP; END $$;
             DROP SCHEMA IF EXISTS sync CASCADE;
             DROP SCHEMA IF EXISTS switchyard_sync CASCADE;
             CREATE SCHEMA sync;
             {setup}"
        ))
        .await
        .unwrap();
    origin
}

/// A config of `datasets` (YAML lines) over the origin at `port`.
fn config(pg: &Pg, port: u16, datasets: &str, local: &std::path::Path) -> String {
    config_on(0, pg, port, datasets, local)
}

/// [`config`], listening on `listen`.
fn config_on(listen: u16, pg: &Pg, port: u16, datasets: &str, local: &std::path::Path) -> String {
    format!(
        r#"listen: 127.0.0.1:{listen}
users: [ {{ name: writer, password: writer-pw, roles: [writer] }} ]
roles:
  writer: {{ grants: [{{ tables: ["field.*", "switchyard.*"], privileges: [select, insert, update, delete] }}] }}
origins: {{ shop: {{ kind: postgres, url: "{url}" }} }}
datasets:
{datasets}
local: {{ path: {local} }}
"#,
        url = pg.url("types", port),
        local = local.display(),
    )
}

async fn start(yaml: &str, dir: &tempfile::TempDir) -> switchyard::Server {
    let file = dir.path().join("switchyard.yaml");
    std::fs::write(&file, yaml).unwrap();
    let config = switchyard_config::Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    switchyard::start(config).await.expect("server starts")
}

async fn connect(server: &switchyard::Server) -> Client {
    let (client, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(server.addr.port())
        .user(WRITER.0)
        .password(WRITER.1)
        .dbname("switchyard")
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

/// Waits until every named dataset streams.
async fn streaming(client: &Client, datasets: &[&str]) {
    for d in datasets {
        wait_for(
            &format!("{d} to stream"),
            Duration::from_secs(60),
            || async {
                let r = rows(
                    client,
                    &format!("SELECT state FROM switchyard.datasets WHERE name = '{d}'"),
                )
                .await;
                (r.first().and_then(|r| r[0].as_deref()) == Some("streaming")).then_some(())
            },
        )
        .await;
    }
}

/// Waits until no sync dataset has entries waiting.
async fn drained(client: &Client, within: Duration) {
    wait_for("the sync queue to drain", within, || async {
        let r = rows(client, "SELECT sum(pending) FROM switchyard.sync_queue").await;
        (r.first().and_then(|r| r[0].as_deref()) == Some("0")).then_some(())
    })
    .await;
}

/// Waits until `sql` answers `want` through `client`.
async fn answers(client: &Client, sql: &str, want: &[&[Option<&str>]], what: &str) {
    let want: Vec<Vec<Option<String>>> = want
        .iter()
        .map(|r| r.iter().map(|v| v.map(str::to_string)).collect())
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let last = rows(client, sql).await;
        if last == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {sql} gave {last:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_writes_from_psql_and_psycopg_are_replayed_exactly_once() {
    let pg = common::pg();
    let origin = reset(
        &pg,
        "CREATE TABLE sync.accounts (id int PRIMARY KEY, owner text NOT NULL, balance numeric(12,2) NOT NULL,
                                     opened date, note text);
         INSERT INTO sync.accounts SELECT i, 'owner ' || i, i * 10, date '2024-01-01' + i, NULL
           FROM generate_series(1, 100) i;",
    )
    .await;
    let forwarder = Forwarder::start(pg.port).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(
        &pg,
        forwarder.port,
        "  field.accounts: { origin: shop, table: sync.accounts, mode: sync, conflict: origin_wins, slot: sy_sync_accounts, publication: sy_sync_accounts }",
        &dir.path().join("local.db"),
    );
    let server = start(&yaml, &dir).await;
    let client = connect(&server).await;
    streaming(&client, &["field.accounts"]).await;

    // Online: a write reaches the origin through the queue, RETURNING included.
    let r = client
        .query(
            "INSERT INTO field.accounts (id, owner, balance) VALUES (1000, 'online', 5.50) RETURNING id, owner, balance::text",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].get::<_, String>(1), "online");
    drained(&client, Duration::from_secs(30)).await;
    let at_origin = origin
        .query_one("SELECT owner FROM sync.accounts WHERE id = 1000", &[])
        .await
        .unwrap();
    assert_eq!(at_origin.get::<_, String>(0), "online");

    // Offline: the origin goes away; writes commit locally and wait.
    forwarder.cut().await;
    let mut script = String::new();
    for i in 0..300 {
        script.push_str(&format!(
            "INSERT INTO field.accounts (id, owner, balance, opened) VALUES ({}, 'psql {i}', {i}.25, '2025-02-03');\n",
            2000 + i
        ));
    }
    for i in 1..=100 {
        script.push_str(&format!(
            "UPDATE field.accounts SET balance = balance + 1, note = 'psql' WHERE id = {i};\n"
        ));
    }
    for i in 0..100 {
        script.push_str(&format!(
            "DELETE FROM field.accounts WHERE id = {};\n",
            2000 + i * 3
        ));
    }
    let file = dir.path().join("offline.sql");
    std::fs::write(&file, script).unwrap();
    let (ok, _out, err) = common::psql(
        server.addr.port(),
        WRITER,
        &["-v", "ON_ERROR_STOP=1", "-q", "-f", file.to_str().unwrap()],
    );
    assert!(ok, "psql: {err}");

    let python = std::env::var("SWITCHYARD_TEST_PYTHON")
        .expect("SWITCHYARD_TEST_PYTHON is not set: run the tests through scripts/test");
    let program = format!(
        r#"
import psycopg
with psycopg.connect(host="127.0.0.1", port={port}, user="writer", password="writer-pw", dbname="switchyard", autocommit=True) as c:
    for i in range(400):
        c.execute("INSERT INTO field.accounts (id, owner, balance) VALUES (%s, %s, %s)", (5000 + i, f"psycopg {{i}}", i))
    for i in range(50):
        c.execute("UPDATE field.accounts SET owner = %s WHERE id = %s", (f"renamed {{i}}", 5000 + i))
    for i in range(50):
        c.execute("DELETE FROM field.accounts WHERE id = %s", (5399 - i,))
print("psycopg wrote 500")
"#,
        port = server.addr.port()
    );
    let out = std::process::Command::new(python)
        .args(["-c", &program])
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("psycopg wrote 500"),
        "psycopg: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Reads go on from the local copy, which shows the writes.
    let expected_count = 101 + 300 - 100 + 400 - 50;
    answers(
        &client,
        "SELECT count(*) FROM field.accounts",
        &[&[Some(&expected_count.to_string())]],
        "the local copy while the origin is away",
    )
    .await;
    let queue = rows(
        &client,
        "SELECT pending, oldest_pending IS NOT NULL, oldest_pending_age_ms >= 0 FROM switchyard.sync_queue WHERE dataset = 'field.accounts'",
    )
    .await;
    assert_eq!(
        queue,
        vec![vec![
            Some("1000".into()),
            Some("t".into()),
            Some("t".into())
        ]]
    );
    wait_for(
        "the replay error to show",
        Duration::from_secs(30),
        || async {
            let r = rows(
                &client,
                "SELECT last_error FROM switchyard.sync_queue WHERE dataset = 'field.accounts'",
            )
            .await;
            r[0][0].clone().filter(|e| !e.is_empty())
        },
    )
    .await;
    let untouched = origin
        .query_one("SELECT count(*) FROM sync.accounts", &[])
        .await
        .unwrap();
    assert_eq!(
        untouched.get::<_, i64>(0),
        101,
        "nothing reached the origin"
    );

    // The origin returns: the queue drains and both sides converge.
    forwarder.restore().await;
    drained(&client, Duration::from_secs(120)).await;
    let checksum = "SELECT count(*)::text, sum(id)::text, sum(balance)::text, \
                    count(*) FILTER (WHERE note = 'psql')::text, count(*) FILTER (WHERE owner LIKE 'renamed %')::text \
                    FROM sync.accounts";
    let want = {
        let ids: i64 = (1..=100).sum::<i64>() + 1000 + (2000..2300).sum::<i64>()
            - (0..100).map(|i| 2000 + i * 3).sum::<i64>()
            + (5000..5400).sum::<i64>()
            - (0..50).map(|i| 5399 - i).sum::<i64>();
        // Balances in cents: accounts i*10 + 1; online 5.50; psql i.25 except
        // the deleted; psycopg i except the deleted.
        let cents: i64 = (1..=100).map(|i| i * 1000 + 100).sum::<i64>()
            + 550
            + (0..300)
                .filter(|i| i % 3 != 0 || *i >= 300)
                .map(|i| i * 100 + 25)
                .sum::<i64>()
            + (0..350).map(|i| i * 100).sum::<i64>();
        vec![vec![
            Some(expected_count.to_string()),
            Some(ids.to_string()),
            Some(format!("{}.{:02}", cents / 100, cents % 100)),
            Some("100".to_string()),
            Some("50".to_string()),
        ]]
    };
    let got = rows(&origin, checksum).await;
    assert_eq!(got, want, "the origin after the replay");
    // The local copy is the origin's, row for row.
    let local = rows(
        &client,
        "SELECT id, owner, balance, opened, note FROM field.accounts ORDER BY id",
    )
    .await;
    let remote = rows(
        &origin,
        "SELECT id, owner, balance, opened, note FROM sync.accounts ORDER BY id",
    )
    .await;
    assert_eq!(local.len(), remote.len());
    assert!(local == remote, "the local copy and the origin differ");
    // Exactly once: one applied entry per local transaction.
    let applied = origin
        .query_one("SELECT count(*) FROM switchyard_sync.applied", &[])
        .await
        .unwrap();
    assert_eq!(applied.get::<_, i64>(0), 1001);
    let conflicts = rows(&client, "SELECT count(*) FROM switchyard.conflicts").await;
    assert_eq!(conflicts, vec![vec![Some("0".into())]]);
    drop(server);
}

/// Each policy meets the same three conflicts (an update of a row the origin
/// changed, a delete of a row the origin changed, an insert of a key the origin
/// took), and an origin-side unique violation sets its entry aside while the
/// queue goes on; every outcome is in `switchyard.conflicts`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_conflict_policy_resolves_and_records_every_conflict() {
    let pg = common::pg();
    let tables = ["c_origin", "c_local", "c_lww", "c_reject"];
    let mut setup = String::new();
    for t in tables {
        setup.push_str(&format!(
            "CREATE TABLE sync.{t} (id int PRIMARY KEY, v text, updated_at timestamptz);
             INSERT INTO sync.{t} VALUES (1, 'a', '2025-01-01 00:00:00+00'), (2, 'b', '2025-01-01 00:00:00+00'),
                                         (3, 'c', '2025-01-01 00:00:00+00');"
        ));
    }
    setup.push_str(
        "CREATE TABLE sync.members (id int PRIMARY KEY, email text UNIQUE);
         INSERT INTO sync.members VALUES (1, 'one@x');",
    );
    let origin = reset(&pg, &setup).await;
    let forwarder = Forwarder::start(pg.port).await;
    let dir = tempfile::tempdir().unwrap();
    let datasets = [
        ("c_origin", "origin_wins"),
        ("c_local", "local_wins"),
        ("c_lww", "last_write_wins, version_column: updated_at"),
        ("c_reject", "reject"),
        ("members", "origin_wins"),
    ]
    .iter()
    .map(|(t, policy)| {
        format!("  field.{t}: {{ origin: shop, table: sync.{t}, mode: sync, conflict: {policy}, slot: sy_sync_{t}, publication: sy_sync_{t} }}")
    })
    .collect::<Vec<_>>()
    .join("\n");
    let server = start(
        &config(&pg, forwarder.port, &datasets, &dir.path().join("local.db")),
        &dir,
    )
    .await;
    let client = connect(&server).await;
    streaming(
        &client,
        &[
            "field.c_origin",
            "field.c_local",
            "field.c_lww",
            "field.c_reject",
            "field.members",
        ],
    )
    .await;

    forwarder.cut().await;
    for t in tables {
        client
            .batch_execute(&format!(
                "UPDATE field.{t} SET v = 'local', updated_at = '2030-01-01 00:00:00+00' WHERE id = 1;
                 DELETE FROM field.{t} WHERE id = 2;
                 INSERT INTO field.{t} (id, v, updated_at) VALUES (4, 'local', '2020-01-01 00:00:00+00');"
            ))
            .await
            .unwrap();
        origin
            .batch_execute(&format!(
                "UPDATE sync.{t} SET v = 'origin', updated_at = '2029-01-01 00:00:00+00' WHERE id = 1;
                 UPDATE sync.{t} SET v = 'origin2', updated_at = '2029-01-01 00:00:00+00' WHERE id = 2;
                 INSERT INTO sync.{t} VALUES (4, 'origin', '2029-01-01 00:00:00+00');"
            ))
            .await
            .unwrap();
    }
    // A key the local copy does not know is taken at the origin meanwhile.
    client
        .batch_execute(
            "INSERT INTO field.members VALUES (5, 'taken@x');
             INSERT INTO field.members VALUES (6, 'six@x');",
        )
        .await
        .unwrap();
    origin
        .batch_execute("INSERT INTO sync.members VALUES (9, 'taken@x')")
        .await
        .unwrap();
    // A duplicate of a key the copy holds fails at once, as at the origin.
    let e = client
        .batch_execute("INSERT INTO field.members VALUES (1, 'again@x')")
        .await
        .unwrap_err();
    assert_eq!(common::sqlstate(&e), "23505", "{e}");

    forwarder.restore().await;
    drained(&client, Duration::from_secs(60)).await;

    let expect = |t: &str| -> Vec<(i32, &'static str, &'static str)> {
        match t {
            "c_origin" | "c_reject" => vec![
                (1, "origin", "2029"),
                (2, "origin2", "2029"),
                (3, "c", "2025"),
                (4, "origin", "2029"),
            ],
            "c_local" => vec![(1, "local", "2030"), (3, "c", "2025"), (4, "local", "2020")],
            "c_lww" => vec![
                (1, "local", "2030"),
                (2, "origin2", "2029"),
                (3, "c", "2025"),
                (4, "origin", "2029"),
            ],
            _ => unreachable!(),
        }
    };
    for t in tables {
        let want: Vec<Vec<Option<String>>> = expect(t)
            .into_iter()
            .map(|(id, v, year)| vec![Some(id.to_string()), Some(v.into()), Some(year.into())])
            .collect();
        let sql = |schema: &str| {
            format!(
                "SELECT id, v, extract(year FROM updated_at AT TIME ZONE 'UTC')::int::text FROM {schema}.{t} ORDER BY id"
            )
        };
        assert_eq!(rows(&origin, &sql("sync")).await, want, "{t} at the origin");
        let want_ref: Vec<Vec<Option<&str>>> = want
            .iter()
            .map(|r| r.iter().map(|v| v.as_deref()).collect())
            .collect();
        let want_ref: Vec<&[Option<&str>]> = want_ref.iter().map(|r| r.as_slice()).collect();
        answers(
            &client,
            &sql("field"),
            &want_ref,
            &format!("{t}'s local copy"),
        )
        .await;
    }
    assert_eq!(
        rows(&origin, "SELECT id, email FROM sync.members ORDER BY id").await,
        vec![
            vec![Some("1".into()), Some("one@x".into())],
            vec![Some("6".into()), Some("six@x".into())],
            vec![Some("9".into()), Some("taken@x".into())],
        ]
    );
    answers(
        &client,
        "SELECT id, email FROM field.members ORDER BY id",
        &[
            &[Some("1"), Some("one@x")],
            &[Some("6"), Some("six@x")],
            &[Some("9"), Some("taken@x")],
        ],
        "members' local copy",
    )
    .await;

    let conflicts = rows(
        &client,
        "SELECT dataset, kind, policy, outcome, coalesce(sqlstate, '-') FROM switchyard.conflicts ORDER BY dataset, kind",
    )
    .await;
    let want: Vec<Vec<Option<String>>> = [
        [
            "field.c_local",
            "delete_origin_differs",
            "local_wins",
            "local_applied",
            "-",
        ],
        [
            "field.c_local",
            "insert_exists",
            "local_wins",
            "local_applied",
            "-",
        ],
        [
            "field.c_local",
            "update_origin_differs",
            "local_wins",
            "local_applied",
            "-",
        ],
        [
            "field.c_lww",
            "delete_origin_differs",
            "last_write_wins",
            "origin_kept",
            "-",
        ],
        [
            "field.c_lww",
            "insert_exists",
            "last_write_wins",
            "origin_kept",
            "-",
        ],
        [
            "field.c_lww",
            "update_origin_differs",
            "last_write_wins",
            "local_applied",
            "-",
        ],
        [
            "field.c_origin",
            "delete_origin_differs",
            "origin_wins",
            "origin_kept",
            "-",
        ],
        [
            "field.c_origin",
            "insert_exists",
            "origin_wins",
            "origin_kept",
            "-",
        ],
        [
            "field.c_origin",
            "update_origin_differs",
            "origin_wins",
            "origin_kept",
            "-",
        ],
        [
            "field.c_reject",
            "delete_origin_differs",
            "reject",
            "set_aside",
            "-",
        ],
        [
            "field.c_reject",
            "insert_exists",
            "reject",
            "set_aside",
            "-",
        ],
        [
            "field.c_reject",
            "update_origin_differs",
            "reject",
            "set_aside",
            "-",
        ],
        [
            "field.members",
            "origin_refused",
            "origin_wins",
            "set_aside",
            "23505",
        ],
    ]
    .iter()
    .map(|r| r.iter().map(|v| Some(v.to_string())).collect())
    .collect();
    assert_eq!(conflicts, want);
    // Both versions are kept.
    let versions = rows(
        &client,
        "SELECT local_row, origin_row FROM switchyard.conflicts
          WHERE dataset = 'field.c_origin' AND kind = 'update_origin_differs'",
    )
    .await;
    let (local, remote) = (
        versions[0][0].clone().unwrap(),
        versions[0][1].clone().unwrap(),
    );
    assert!(local.contains("\"v\":\"local\""), "{local}");
    assert!(remote.contains("\"v\":\"origin\""), "{remote}");
    let set_aside = rows(
        &client,
        "SELECT dataset, set_aside FROM switchyard.sync_queue WHERE set_aside > 0 ORDER BY dataset",
    )
    .await;
    assert_eq!(
        set_aside,
        vec![
            vec![Some("field.c_reject".into()), Some("3".into())],
            vec![Some("field.members".into()), Some("1".into())],
        ]
    );
    drop(server);
}

/// The origin table of the crash tests, with a trigger that counts every row
/// change the origin executes: exactly once means one count per queued change.
const LEDGER: &str = "CREATE TABLE sync.ledger (id int PRIMARY KEY, n int NOT NULL, label text);
     INSERT INTO sync.ledger SELECT i, 0, 'start' FROM generate_series(1, 20) i;
     CREATE TABLE sync.changes (op text, id int);
     CREATE FUNCTION sync.count_change() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN INSERT INTO sync.changes VALUES (TG_OP, coalesce(NEW.id, OLD.id)); RETURN NULL; END $$;
     CREATE TRIGGER count_change AFTER INSERT OR UPDATE OR DELETE ON sync.ledger
       FOR EACH ROW EXECUTE FUNCTION sync.count_change();";

/// `switchyard serve` as its own process, with `crash_at` (a crash point and
/// the how-many-th time) in its environment.
fn serve_crashing(file: &std::path::Path, crash_at: Option<&str>) -> std::process::Child {
    let mut command = std::process::Command::new(crate::materialize::switchyard_binary());
    command
        .args(["serve", "--config"])
        .arg(file)
        .env(
            "SWITCHYARD_LOG",
            "info,switchyard_materialize=debug,switchyard_connectors=debug",
        )
        .stdout(std::process::Stdio::null())
        .stderr(
            std::fs::File::options()
                .create(true)
                .append(true)
                .open(file.with_file_name("serve.log"))
                .unwrap(),
        );
    if let Some(at) = crash_at {
        command.env("SWITCHYARD_CRASH_AT", at);
    }
    command.spawn().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_every_replay_step_loses_nothing_and_doubles_nothing() {
    let pg = common::pg();
    for point in switchyard_materialize::crash::POINTS {
        let origin = reset(&pg, LEDGER).await;
        let forwarder = Forwarder::start(pg.port).await;
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let file = dir.path().join("switchyard.yaml");
        std::fs::write(
            &file,
            config_on(
                port,
                &pg,
                forwarder.port,
                "  field.ledger: { origin: shop, table: sync.ledger, mode: sync, conflict: reject, slot: sy_sync_ledger, publication: sy_sync_ledger }",
                &dir.path().join("local.db"),
            ),
        )
        .unwrap();
        // Replayed entries are finished together: the first finish is the one.
        let nth = if point == "replay_after_finish" { 1 } else { 5 };
        let mut child = serve_crashing(&file, Some(&format!("{point}:{nth}")));
        let client = wait_for("serve to answer", Duration::from_secs(60), || {
            crate::materialize::connect_port(port, WRITER)
        })
        .await;
        streaming(&client, &["field.ledger"]).await;

        forwarder.cut().await;
        ledger_changes(&client, "id").await;
        drop(client);
        forwarder.restore().await;
        // The replay reaches the crash point (at its fifth pass) and dies there.
        killed_at(&mut child, &file, point).await;

        let mut child = serve_crashing(&file, None);
        let client = wait_for("serve to answer again", Duration::from_secs(60), || {
            crate::materialize::connect_port(port, WRITER)
        })
        .await;
        drained(&client, Duration::from_secs(60)).await;

        // Counted at the origin: each change executed once, the state as expected.
        let changes = rows(
            &origin,
            "SELECT op, count(*)::text FROM sync.changes GROUP BY op ORDER BY op",
        )
        .await;
        assert_eq!(
            changes,
            vec![
                vec![Some("DELETE".into()), Some("5".into())],
                vec![Some("INSERT".into()), Some("5".into())],
                vec![Some("UPDATE".into()), Some("10".into())],
            ],
            "{point}: row changes executed at the origin"
        );
        let checksum = "SELECT count(*)::text, sum(id)::text, sum(n)::text, count(*) FILTER (WHERE label = 'upd')::text FROM {t}";
        let want = vec![vec![
            Some("20".to_string()),
            Some(((1..=15).sum::<i32>() + (100..105).sum::<i32>()).to_string()),
            Some(((1..=10).sum::<i32>() + (0..5).sum::<i32>()).to_string()),
            Some("10".to_string()),
        ]];
        assert_eq!(
            rows(&origin, &checksum.replace("{t}", "sync.ledger")).await,
            want,
            "{point}: the origin"
        );
        let applied = rows(
            &origin,
            "SELECT count(*)::text FROM switchyard_sync.applied",
        )
        .await;
        assert_eq!(applied, vec![vec![Some("20".to_string())]], "{point}");
        let want_ref: Vec<Vec<Option<&str>>> = want
            .iter()
            .map(|r| r.iter().map(|v| v.as_deref()).collect())
            .collect();
        let want_ref: Vec<&[Option<&str>]> = want_ref.iter().map(|r| r.as_slice()).collect();
        answers(
            &client,
            &checksum.replace("{t}", "field.ledger"),
            &want_ref,
            &format!("{point}: the local copy"),
        )
        .await;
        assert_eq!(
            rows(&client, "SELECT count(*)::text FROM switchyard.conflicts").await,
            vec![vec![Some("0".to_string())]],
            "{point}: no conflicts"
        );
        drop(client);
        child.kill().unwrap();
        let _ = child.wait();
    }
}

/// The 20 local transactions the kill tests queue: 10 updates, 5 inserts and 5
/// deletes of the ledger (keyed by `key`).
async fn ledger_changes(client: &Client, key: &str) {
    let mut statements: Vec<String> = (1..=10)
        .map(|i| format!("UPDATE field.ledger SET n = n + {i}, label = 'upd' WHERE {key} = {i}"))
        .collect();
    statements.extend((0..5).map(|i| {
        format!(
            "INSERT INTO field.ledger ({key}, n, label) VALUES ({}, {i}, 'new')",
            100 + i
        )
    }));
    statements.extend((16..=20).map(|i| format!("DELETE FROM field.ledger WHERE {key} = {i}")));
    for sql in &statements {
        client
            .execute(sql.as_str(), &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }
}

/// Waits until `child` dies by SIGKILL at `point` (its log in the failure otherwise).
async fn killed_at(child: &mut std::process::Child, file: &std::path::Path, point: &str) {
    use std::os::unix::process::ExitStatusExt;
    let log = file.with_file_name("serve.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "serve did not die at {point}; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.signal(), Some(9), "{point}: killed by SIGKILL");
}

/// The test MongoDB's port (on 127.0.0.1).
fn mongo_port() -> u16 {
    let url = common::mongo_url();
    let at = url
        .find("127.0.0.1:")
        .expect("the test MongoDB is on 127.0.0.1")
        + 10;
    url[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

/// `mongodb://...127.0.0.1:<port>...` with the port replaced.
fn mongo_url_via(port: u16) -> String {
    let url = common::mongo_url();
    let at = url
        .find("127.0.0.1:")
        .expect("the test MongoDB is on 127.0.0.1")
        + 10;
    let end = url[at..]
        .find(|c: char| !c.is_ascii_digit())
        .map_or(url.len(), |e| at + e);
    format!("{}{port}{}", &url[..at], &url[end..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_sync_replays_offline_writes_once_and_resolves_conflicts() {
    use mongodb::bson::{doc, Document};
    let mongo = mongodb::Client::with_uri_str(common::mongo_url())
        .await
        .unwrap();
    let db = mongo.database("shop");
    let notes = db.collection::<Document>("sync_notes");
    notes.drop().await.unwrap();
    db.collection::<Document>("switchyard_sync_applied")
        .drop()
        .await
        .unwrap();
    let docs: Vec<_> = (1..=20)
        .map(|i| doc! {"_id": i, "title": format!("note {i}"), "qty": i})
        .collect();
    notes.insert_many(docs).await.unwrap();
    let tasks = db.collection::<Document>("sync_tasks");
    tasks.drop().await.unwrap();
    tasks
        .insert_many((1..=3).map(|i| doc! {"_id": i, "state": "open", "version": 1}))
        .await
        .unwrap();
    let target = mongo_port();
    let forwarder = Forwarder::start(target).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"listen: 127.0.0.1:0
users: [ {{ name: writer, password: writer-pw, roles: [writer] }} ]
roles:
  writer: {{ grants: [{{ tables: ["field.*", "switchyard.*", "direct.*"], privileges: [select, insert, update, delete] }}] }}
origins: {{ docs: {{ kind: mongodb, url: "{url}", database: shop }} }}
datasets:
  direct: {{ origin: docs, tables: [sync_notes] }}
  field.notes: {{ origin: docs, table: sync_notes, mode: sync, conflict: origin_wins }}
  field.tasks: {{ origin: docs, table: sync_tasks, mode: sync, conflict: last_write_wins, version_column: version }}
local: {{ path: {local} }}
"#,
        url = mongo_url_via(forwarder.port),
        local = dir.path().join("local.db").display(),
    );
    let server = start(&yaml, &dir).await;
    let c = connect(&server).await;
    streaming(&c, &["field.notes", "field.tasks"]).await;

    // The origin away: every write commits locally and waits.
    forwarder.cut().await;
    for i in 1000..1100_i32 {
        c.execute(
            "INSERT INTO field.notes (_id, title, qty) VALUES ($1, $2, $3)",
            &[&i, &format!("offline {i}"), &i],
        )
        .await
        .unwrap_or_else(|e| panic!("offline insert {i}: {e:?}"));
    }
    for sql in [
        "UPDATE field.notes SET qty = qty + 100 WHERE _id = 2",
        "DELETE FROM field.notes WHERE _id = 3",
        "UPDATE field.notes SET title = 'local' WHERE _id = 4",
        "INSERT INTO field.notes (_id, title, qty) VALUES (5000, 'local', 1)",
        "UPDATE field.tasks SET state = 'local', version = 5 WHERE _id = 1",
        "UPDATE field.tasks SET state = 'local', version = 2 WHERE _id = 2",
    ] {
        c.execute(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }
    let local = rows(&c, "SELECT count(*) FROM field.notes").await;
    assert_eq!(local[0][0].as_deref(), Some("120"), "reads see the writes");
    let pending = rows(
        &c,
        "SELECT pending FROM switchyard.sync_queue WHERE dataset = 'field.notes'",
    )
    .await;
    assert_eq!(pending[0][0].as_deref(), Some("104"));
    let pending = rows(
        &c,
        "SELECT pending FROM switchyard.sync_queue WHERE dataset = 'field.tasks'",
    )
    .await;
    assert_eq!(pending[0][0].as_deref(), Some("2"));
    // Meanwhile at the origin: two changes the queued ones will meet.
    notes
        .update_one(doc! {"_id": 4}, doc! {"$set": {"title": "origin"}})
        .await
        .unwrap();
    notes
        .insert_one(doc! {"_id": 5000, "title": "origin", "qty": 2})
        .await
        .unwrap();
    // By version_column: the local change is newer than the first, older than the second.
    tasks
        .update_one(
            doc! {"_id": 1},
            doc! {"$set": {"state": "origin", "version": 3}},
        )
        .await
        .unwrap();
    tasks
        .update_one(
            doc! {"_id": 2},
            doc! {"$set": {"state": "origin", "version": 9}},
        )
        .await
        .unwrap();

    forwarder.restore().await;
    drained(&c, Duration::from_secs(120)).await;
    // Exactly once: one applied record per entry, the origin as expected.
    let applied = db
        .collection::<Document>("switchyard_sync_applied")
        .count_documents(doc! {})
        .await
        .unwrap();
    let recorded = rows(
        &c,
        "SELECT kind, outcome, key, sqlstate, message FROM switchyard.conflicts WHERE dataset = 'field.notes' ORDER BY kind",
    )
    .await;
    assert_eq!(applied, 106, "conflicts: {recorded:?}");
    assert_eq!(notes.count_documents(doc! {}).await.unwrap(), 120);
    assert_eq!(
        notes
            .count_documents(doc! {"_id": {"$gte": 1000, "$lt": 1100}})
            .await
            .unwrap(),
        100
    );
    let two = notes.find_one(doc! {"_id": 2}).await.unwrap().unwrap();
    assert_eq!(
        two.get("qty")
            .and_then(mongodb::bson::Bson::as_i64)
            .or_else(|| two.get_i32("qty").ok().map(i64::from)),
        Some(102)
    );
    assert!(notes.find_one(doc! {"_id": 3}).await.unwrap().is_none());
    let four = notes.find_one(doc! {"_id": 4}).await.unwrap().unwrap();
    assert_eq!(four.get_str("title").unwrap(), "origin", "origin_wins");
    let five = notes.find_one(doc! {"_id": 5000}).await.unwrap().unwrap();
    assert_eq!(five.get_str("title").unwrap(), "origin", "origin_wins");
    // The copy takes the origin's rows, and each conflict is recorded.
    let all = "SELECT _id, title, qty FROM {} ORDER BY _id";
    let origin_rows = rows(&c, &all.replace("{}", "direct.sync_notes")).await;
    wait_for(
        "the copy to equal the origin",
        Duration::from_secs(30),
        || async {
            (rows(&c, &all.replace("{}", "field.notes")).await == origin_rows).then_some(())
        },
    )
    .await;
    let state = |id: i32| {
        let tasks = tasks.clone();
        async move {
            let d = tasks.find_one(doc! {"_id": id}).await.unwrap().unwrap();
            (
                d.get_str("state").unwrap().to_string(),
                d.get_i32("version").unwrap(),
            )
        }
    };
    assert_eq!(
        state(1).await,
        ("local".into(), 5),
        "the newer local version wins"
    );
    assert_eq!(
        state(2).await,
        ("origin".into(), 9),
        "the newer origin version stays"
    );
    assert_eq!(state(3).await, ("open".into(), 1));
    let tasks_conflicts = rows(
        &c,
        "SELECT kind, outcome, key FROM switchyard.conflicts WHERE dataset = 'field.tasks' ORDER BY key",
    )
    .await;
    assert_eq!(
        tasks_conflicts,
        vec![
            vec![
                Some("update_origin_differs".into()),
                Some("local_applied".into()),
                Some(r#"["1"]"#.into())
            ],
            vec![
                Some("update_origin_differs".into()),
                Some("origin_kept".into()),
                Some(r#"["2"]"#.into())
            ],
        ]
    );
    let conflicts = rows(
        &c,
        "SELECT kind, outcome, key FROM switchyard.conflicts WHERE dataset = 'field.notes' ORDER BY kind",
    )
    .await;
    assert_eq!(
        conflicts,
        vec![
            vec![
                Some("insert_exists".into()),
                Some("origin_kept".into()),
                Some(r#"["5000"]"#.into())
            ],
            vec![
                Some("update_origin_differs".into()),
                Some("origin_kept".into()),
                Some(r#"["4"]"#.into())
            ],
        ]
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_every_mongodb_replay_step_loses_nothing_and_doubles_nothing() {
    use mongodb::bson::{doc, Document};
    let mongo = mongodb::Client::with_uri_str(common::mongo_url())
        .await
        .unwrap();
    let db = mongo.database("shop");
    let target = mongo_port();
    for point in switchyard_materialize::crash::POINTS.iter() {
        let ledger = db.collection::<Document>("sync_ledger");
        ledger.drop().await.unwrap();
        db.collection::<Document>("switchyard_sync_applied")
            .drop()
            .await
            .unwrap();
        ledger
            .insert_many((1..=20).map(|i| doc! {"_id": i, "n": 0, "label": "start"}))
            .await
            .unwrap();
        let forwarder = Forwarder::start(target).await;
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let file = dir.path().join("switchyard.yaml");
        std::fs::write(
            &file,
            format!(
                r#"listen: 127.0.0.1:{port}
users: [ {{ name: writer, password: writer-pw, roles: [writer] }} ]
roles:
  writer: {{ grants: [{{ tables: ["field.*", "switchyard.*"], privileges: [select, insert, update, delete] }}] }}
origins: {{ docs: {{ kind: mongodb, url: "{url}", database: shop }} }}
datasets:
  field.ledger: {{ origin: docs, table: sync_ledger, mode: sync, conflict: reject }}
local: {{ path: {local} }}
"#,
                url = mongo_url_via(forwarder.port),
                local = dir.path().join("local.db").display(),
            ),
        )
        .unwrap();
        let nth = if *point == "replay_after_finish" {
            1
        } else {
            5
        };
        let mut child = serve_crashing(&file, Some(&format!("{point}:{nth}")));
        let client = wait_for("serve to answer", Duration::from_secs(60), || {
            crate::materialize::connect_port(port, WRITER)
        })
        .await;
        streaming(&client, &["field.ledger"]).await;

        forwarder.cut().await;
        ledger_changes(&client, "_id").await;
        drop(client);
        forwarder.restore().await;
        killed_at(&mut child, &file, point).await;

        let mut child = serve_crashing(&file, None);
        let client = wait_for("serve to answer again", Duration::from_secs(60), || {
            crate::materialize::connect_port(port, WRITER)
        })
        .await;
        drained(&client, Duration::from_secs(90)).await;

        // A change run twice would meet its own result: an insert a duplicate
        // key, an update or delete a before-image that no longer matches, each
        // set aside as a conflict (policy reject). None, and the state exact.
        assert_eq!(
            rows(&client, "SELECT count(*)::text FROM switchyard.conflicts").await,
            vec![vec![Some("0".to_string())]],
            "{point}: no conflicts"
        );
        let applied = db
            .collection::<Document>("switchyard_sync_applied")
            .count_documents(doc! {})
            .await
            .unwrap();
        assert_eq!(applied, 20, "{point}: entries applied");
        let docs: Vec<Document> = {
            use futures::TryStreamExt;
            ledger
                .find(doc! {})
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap()
        };
        let int = |d: &Document, k: &str| {
            d.get(k)
                .and_then(|v| v.as_i64().or_else(|| v.as_i32().map(i64::from)))
                .unwrap()
        };
        assert_eq!(docs.len(), 20, "{point}: documents");
        assert_eq!(
            docs.iter().map(|d| int(d, "_id")).sum::<i64>(),
            (1..=15).sum::<i64>() + (100..105).sum::<i64>(),
            "{point}: ids"
        );
        assert_eq!(
            docs.iter().map(|d| int(d, "n")).sum::<i64>(),
            (1..=10).sum::<i64>() + (0..5).sum::<i64>(),
            "{point}: values"
        );
        assert_eq!(
            docs.iter()
                .filter(|d| d.get_str("label").ok() == Some("upd"))
                .count(),
            10,
            "{point}: updated"
        );
        answers(
            &client,
            "SELECT count(*)::text, sum(n)::text FROM field.ledger",
            &[&[
                Some("20"),
                Some(&((1..=10).sum::<i64>() + (0..5).sum::<i64>()).to_string()),
            ]],
            &format!("{point}: the local copy"),
        )
        .await;
        drop(client);
        child.kill().unwrap();
        let _ = child.wait();
    }
}
