//! Live materialized datasets over a real PostgreSQL origin's logical replication:
//! the copy follows inserts, updates, deletes and truncates in whole origin
//! transactions (every type of kinds.all_types, NULLs, key changes, a filtered
//! dataset), follows an added column, takes a new snapshot when a column's type
//! changes or the slot is dropped, and acknowledges the slot only up to what the
//! local store holds; `kill -9` during streaming loses and doubles nothing.

use std::time::Duration;

use tokio_postgres::Client;

use crate::common::{self, rows, wait_for, Pg};
use crate::materialize::{connect_port, serve};

const KEEPER: (&str, &str) = ("keeper", "keeper-pw");

/// Recreates the `live` schema at the types database (tables, no feeds) and
/// drops the slots and publications earlier runs left.
async fn reset(pg: &Pg) -> Client {
    let origin = pg.direct("types").await;
    let ours = "(slot_name LIKE 'switchyard\\_copies\\_%' OR slot_name LIKE 'sy\\_test\\_%')";
    // A killed server's walsender may hold its slot a moment longer.
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
        .batch_execute(
            "DO $$ DECLARE p text; BEGIN
               FOR p IN SELECT pubname FROM pg_publication
                         WHERE pubname LIKE 'switchyard\\_copies\\_%' OR pubname LIKE 'sy\\_test\\_%' LOOP
                 EXECUTE format('DROP PUBLICATION %I', p);
               END LOOP; END $$;
             DROP SCHEMA IF EXISTS live CASCADE;
             CREATE SCHEMA live;
             CREATE TABLE live.items (id int PRIMARY KEY, name text, price numeric(10,2), tags text[]);
             INSERT INTO live.items SELECT i, 'item ' || i, i * 1.25, ARRAY['t' || i] FROM generate_series(1, 100) i;
             CREATE TABLE live.all_types (LIKE kinds.all_types);
             ALTER TABLE live.all_types ADD PRIMARY KEY (id);
             INSERT INTO live.all_types SELECT * FROM kinds.all_types;
             CREATE TABLE live.nokey (a int, b text);",
        )
        .await
        .unwrap();
    origin
}

fn config(pg: &Pg, port: u16, local: &str) -> String {
    format!(
        r#"listen: 127.0.0.1:{port}
users: [ {{ name: keeper, password: keeper-pw, roles: [keeper] }} ]
roles: {{ keeper: {{ grants: [{{ tables: ["*"], privileges: [select, update] }}] }} }}
origins: {{ types: {{ kind: postgres, url: "{url}" }} }}
datasets:
  origin: {{ origin: types, tables: [live.items, live.all_types] }}
  copies.items: {{ origin: types, table: live.items, mode: materialize, live: true }}
  copies.all_types: {{ origin: types, table: live.all_types, mode: materialize, live: true }}
  copies.cheap: {{ origin: types, table: live.items, filters: {{ name: cheap }}, mode: materialize, live: true, slot: sy_test_cheap, publication: sy_test_cheap }}
  copies.nokey: {{ origin: types, table: live.nokey, mode: materialize, live: true }}
local: {local}
"#,
        url = pg.url("types", pg.port),
    )
}

async fn start(pg: &Pg) -> (switchyard::Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("switchyard.yaml");
    std::fs::write(&file, config(pg, 0, "{ path: data/local.db }")).unwrap();
    let config = switchyard_config::Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    (switchyard::start(config).await.expect("server starts"), dir)
}

/// `dataset`'s (state, position, lag_ms, last_error) once `check` accepts them.
async fn status_when(
    client: &Client,
    dataset: &str,
    what: &str,
    check: impl Fn(&[Option<String>]) -> bool,
) -> Vec<Option<String>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = rows(
            client,
            &format!(
                "SELECT state, position, lag_ms, last_error, rows FROM switchyard.datasets WHERE name = '{dataset}'"
            ),
        )
        .await;
        let row = r.into_iter().next().unwrap_or_default();
        if check(&row) {
            return row;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}: {row:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the copy reads back exactly as the origin's table does through
/// federation (row for row, as text).
async fn converges(client: &Client, copy: &str, origin_sql: &str) {
    converges_by(client, copy, origin_sql, "id").await
}

/// [`converges`], the copy's rows ordered by `key`.
async fn converges_by(client: &Client, copy: &str, origin_sql: &str, key: &str) {
    let copy_sql = format!("SELECT * FROM {copy} ORDER BY {key}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let want = rows(client, origin_sql).await;
        let got = rows(client, &copy_sql).await;
        if want == got {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{copy} did not converge:\norigin {want:?}\ncopy   {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `switchyard serve` on `file` as a child process, and a client once it answers.
async fn serve_and_connect(file: &std::path::Path, port: u16) -> (std::process::Child, Client) {
    let child = serve(file);
    let c = wait_for("serve to answer", Duration::from_secs(30), || async {
        connect_port(port, KEEPER).await
    })
    .await;
    (child, c)
}

/// The slot's confirmed position is never ahead of what the copy stands at.
async fn slot_behind_copy(origin: &Client, client: &Client, dataset: &str, slot: &str) {
    let confirmed: Option<String> = origin
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .get(0);
    let position = rows(
        client,
        &format!("SELECT position FROM switchyard.datasets WHERE name = '{dataset}'"),
    )
    .await[0][0]
        .clone()
        .expect("a live copy has a position");
    let ok: bool = origin
        .query_one(
            "SELECT $1::text::pg_lsn <= $2::text::pg_lsn",
            &[&confirmed.clone().unwrap_or("0/0".into()), &position],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        ok,
        "slot {slot} confirmed {confirmed:?}, ahead of the copy's {position}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_copy_follows_every_change_in_whole_transactions() {
    let pg = common::pg();
    let origin = reset(&pg).await;
    let (server, _dir) = start(&pg).await;
    let c = connect_port(server.addr.port(), KEEPER).await.unwrap();
    for d in ["copies.items", "copies.all_types", "copies.cheap"] {
        let s = status_when(&c, d, &format!("{d} streaming"), |r| {
            r[0].as_deref() == Some("streaming")
        })
        .await;
        assert!(s[1].is_some(), "{d} has a position: {s:?}");
    }
    // A table without a key cannot be followed: refused with the fix.
    let nokey = status_when(&c, "copies.nokey", "copies.nokey refused", |r| {
        r[0].as_deref() == Some("error")
    })
    .await;
    let why = nokey[3].clone().unwrap_or_default();
    assert!(
        why.contains("has no primary key") && why.contains("REPLICA IDENTITY FULL"),
        "{why}"
    );

    let items = "SELECT * FROM origin.items ORDER BY id";
    let all_types = "SELECT * FROM origin.all_types ORDER BY id";
    converges(&c, "copies.items", items).await;
    converges(&c, "copies.all_types", all_types).await;

    // Inserts, updates (a key change too), deletes, NULLs, in several transactions.
    origin
        .batch_execute(
            "INSERT INTO live.items VALUES (101, 'cheap', 0.5, '{a,NULL}'), (102, NULL, NULL, NULL);
             UPDATE live.items SET price = price * 2 WHERE id <= 10;
             UPDATE live.items SET id = 5000 WHERE id = 50;
             DELETE FROM live.items WHERE id BETWEEN 20 AND 29;
             BEGIN;
             UPDATE live.items SET name = 'cheap' WHERE id IN (1, 2, 3);
             INSERT INTO live.items SELECT i, 'bulk', i, NULL FROM generate_series(200, 1199) i;
             DELETE FROM live.items WHERE id = 102;
             COMMIT;
             UPDATE live.items SET name = 'dear' WHERE id = 2;
             INSERT INTO live.all_types SELECT id + 10, i2, i4, i8, f4, f8, n, nu, t, vc, ch, b, d, tm, ts, tz, iv, u, by, j, jb, ia, ba, fa, ta, la, da, tza, na, ya, iva FROM kinds.all_types;
             UPDATE live.all_types SET t = NULL, ia = '{7,8}', tz = tz + interval '1 hour' WHERE id = 1;
             UPDATE live.all_types SET n = NULL, jb = '{\"k\": [true]}' WHERE id = 12;
             DELETE FROM live.all_types WHERE id = 13;",
        )
        .await
        .unwrap();
    converges(&c, "copies.items", items).await;
    converges(&c, "copies.all_types", all_types).await;
    // The filtered dataset: rows updated into the filter appear, out of it go.
    converges(
        &c,
        "copies.cheap",
        "SELECT * FROM origin.items WHERE name = 'cheap' ORDER BY id",
    )
    .await;
    let s = status_when(&c, "copies.items", "a lag", |r| r[2].is_some()).await;
    assert_eq!(s[4].as_deref(), Some("1091"), "rows in the copy: {s:?}");
    slot_behind_copy(&origin, &c, "copies.items", "switchyard_copies_items").await;

    // A truncate empties the copy.
    origin
        .batch_execute("TRUNCATE live.all_types")
        .await
        .unwrap();
    converges(&c, "copies.all_types", all_types).await;

    // An added column (no default) is followed; rows already there read NULL.
    origin
        .batch_execute(
            "ALTER TABLE live.items ADD COLUMN extra int;
             UPDATE live.items SET extra = 5 WHERE id = 1;",
        )
        .await
        .unwrap();
    let got = wait_for("the added column", Duration::from_secs(30), || async {
        let r = c
            .query(
                "SELECT id, extra FROM copies.items WHERE id IN (1, 4) ORDER BY id",
                &[],
            )
            .await
            .ok()?;
        let v: Vec<(i32, Option<i32>)> = r.iter().map(|r| (r.get(0), r.get(1))).collect();
        (v == vec![(1, Some(5)), (4, None)]).then_some(v)
    })
    .await;
    assert_eq!(got.len(), 2);

    // A type change cannot be followed: a new snapshot, after which the copy
    // has the new type and the rows as they are.
    origin
        .batch_execute(
            "ALTER TABLE live.items ALTER COLUMN price TYPE float8;
             UPDATE live.items SET price = 0.25 WHERE id = 3;",
        )
        .await
        .unwrap();
    let price = wait_for(
        "a new snapshot with float prices",
        Duration::from_secs(30),
        || async {
            let r = c
                .query_one("SELECT price FROM copies.items WHERE id = 3", &[])
                .await
                .ok()?;
            r.try_get::<_, f64>(0).ok()
        },
    )
    .await;
    assert_eq!(price, 0.25);
    status_when(&c, "copies.items", "streaming again", |r| {
        r[0].as_deref() == Some("streaming")
    })
    .await;

    // The slot dropped at the origin: a new snapshot, and streaming goes on.
    let slot = "switchyard_copies_all_types";
    wait_for("the slot to be held", Duration::from_secs(10), || async {
        let r = origin
            .query_one(
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .ok()?;
        r.get::<_, Option<i32>>(0)
    })
    .await;
    origin
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '{slot}';"
        ))
        .await
        .unwrap();
    wait_for("the slot to be free", Duration::from_secs(10), || async {
        origin
            .batch_execute(&format!("SELECT pg_drop_replication_slot('{slot}')"))
            .await
            .ok()
    })
    .await;
    origin
        .batch_execute("INSERT INTO live.all_types SELECT * FROM kinds.all_types")
        .await
        .unwrap();
    converges(&c, "copies.all_types", all_types).await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_streaming_loses_nothing_and_doubles_nothing() {
    let pg = common::pg();
    let origin = reset(&pg).await;
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let file = dir.path().join("switchyard.yaml");
    std::fs::write(&file, config(&pg, port, "{ path: data/local.db }")).unwrap();

    // A writer at the origin: numbered single-row and multi-row transactions.
    let writer_pg = pg.direct("types").await;
    let writer = tokio::spawn(async move {
        for i in 0..400 {
            let sql = if i % 10 == 0 {
                format!(
                    "INSERT INTO live.items SELECT g, 'w', 1, NULL FROM generate_series({a}, {b}) g",
                    a = 10_000 + i * 100,
                    b = 10_000 + i * 100 + 49
                )
            } else {
                format!(
                    "INSERT INTO live.items VALUES ({}, 'w', 1, NULL)",
                    10_000 + i * 100
                )
            };
            writer_pg.batch_execute(&sql).await.unwrap();
            if i % 3 == 0 {
                writer_pg
                    .batch_execute(&format!(
                        "UPDATE live.items SET price = price + 1 WHERE id = {}",
                        10_000 + (i / 2) * 100
                    ))
                    .await
                    .unwrap();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });

    for round in 0..3 {
        let (mut child, c) = serve_and_connect(&file, port).await;
        status_when(&c, "copies.items", "streaming", |r| {
            r[0].as_deref() == Some("streaming")
        })
        .await;
        // Let some transactions through, checking the slot stays behind the copy.
        for _ in 0..5 {
            slot_behind_copy(&origin, &c, "copies.items", "switchyard_copies_items").await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        child.kill().unwrap(); // SIGKILL, mid-stream
        child.wait().unwrap();
        let _ = round;
    }
    writer.await.unwrap();

    let (mut child, c) = serve_and_connect(&file, port).await;
    let want: (i64, String) = {
        let r = origin
            .query_one("SELECT count(*), sum(price)::text FROM live.items", &[])
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    let got = wait_for("the copy to catch up", Duration::from_secs(60), || async {
        let r = c
            .query_one(
                "SELECT count(*), count(DISTINCT id), CAST(sum(price) AS text) FROM copies.items",
                &[],
            )
            .await
            .ok()?;
        let got: (i64, i64, String) = (r.get(0), r.get(1), r.get(2));
        (got.0 == want.0 && got.2 == want.1).then_some(got)
    })
    .await;
    assert_eq!(got.0, got.1, "0 doubled");
    slot_behind_copy(&origin, &c, "copies.items", "switchyard_copies_items").await;
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_copy_is_served_while_its_origin_is_down_and_catches_up() {
    let pg = common::pg();
    let origin = reset(&pg).await;
    origin
        .batch_execute(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sy_norepl') THEN
                 CREATE ROLE sy_norepl LOGIN PASSWORD 'norepl-pw';
               END IF; END $$;
             GRANT USAGE ON SCHEMA live TO sy_norepl;
             GRANT SELECT ON ALL TABLES IN SCHEMA live TO sy_norepl;",
        )
        .await
        .unwrap();
    let forwarder = common::Forwarder::start(pg.port).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("switchyard.yaml");
    std::fs::write(
        &file,
        format!(
            r#"listen: 127.0.0.1:0
users: [ {{ name: keeper, password: keeper-pw, roles: [keeper] }} ]
roles: {{ keeper: {{ grants: [{{ tables: ["*"], privileges: [select, update] }}] }} }}
origins:
  types: {{ kind: postgres, url: "{via}" }}
  plain: {{ kind: postgres, url: "postgres://sy_norepl:norepl-pw@127.0.0.1:{port}/types" }}
datasets:
  copies.items: {{ origin: types, table: live.items, mode: materialize, live: true }}
  copies.denied: {{ origin: plain, table: live.items, mode: materialize, live: true, slot: sy_test_denied, publication: sy_test_denied }}
local: {{ path: data/local.db }}
"#,
            via = pg.url("types", forwarder.port),
            port = pg.port,
        ),
    )
    .unwrap();
    let config = switchyard_config::Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    let server = switchyard::start(config).await.expect("server starts");
    let c = connect_port(server.addr.port(), KEEPER).await.unwrap();

    // A role without REPLICATION: the dataset's error says how to fix it.
    let denied = status_when(&c, "copies.denied", "copies.denied refused", |r| {
        r[0].as_deref() == Some("error")
    })
    .await;
    let why = denied[3].clone().unwrap_or_default();
    assert!(
        why.contains("no REPLICATION privilege")
            && why.contains("ALTER ROLE sy_norepl REPLICATION")
            && why.contains("42501"),
        "{why}"
    );

    status_when(&c, "copies.items", "streaming", |r| {
        r[0].as_deref() == Some("streaming")
    })
    .await;
    forwarder.cut().await;
    let down = status_when(&c, "copies.items", "origin down", |r| {
        r[0].as_deref() == Some("origin down")
    })
    .await;
    assert!(down[3].is_some(), "{down:?}");
    // Reads go on from the copy, and changes made meanwhile arrive on return.
    let n = c
        .query_one("SELECT count(*) FROM copies.items", &[])
        .await
        .unwrap();
    assert_eq!(n.get::<_, i64>(0), 100);
    origin
        .batch_execute(
            "INSERT INTO live.items VALUES (500, 'while down', 1, NULL);
             DELETE FROM live.items WHERE id = 1;",
        )
        .await
        .unwrap();
    forwarder.restore().await;
    let got = wait_for("the copy to catch up", Duration::from_secs(60), || async {
        let r = c
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE id = 500), count(*) FILTER (WHERE id = 1) FROM copies.items",
                &[],
            )
            .await
            .ok()?;
        let v: (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
        (v == (100, 1, 0)).then_some(v)
    })
    .await;
    assert_eq!(got, (100, 1, 0));
    status_when(&c, "copies.items", "streaming again", |r| {
        r[0].as_deref() == Some("streaming")
    })
    .await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_mongodb_copy_follows_its_change_stream() {
    use mongodb::bson::doc;
    let mongo = mongodb::Client::with_uri_str(common::mongo_url())
        .await
        .unwrap();
    let coll = mongo
        .database("shop")
        .collection::<mongodb::bson::Document>("live_items");
    coll.drop().await.unwrap();
    let docs: Vec<_> = (1..=50)
        .map(|i| doc! {"_id": i, "name": format!("item {i}"), "qty": i, "tier": if i % 2 == 0 { "gold" } else { "free" }})
        .collect();
    coll.insert_many(docs).await.unwrap();

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
users: [ {{ name: keeper, password: keeper-pw, roles: [keeper] }} ]
roles: {{ keeper: {{ grants: [{{ tables: ["*"], privileges: [select, update] }}] }} }}
origins:
  docs: {{ kind: mongodb, url: "{url}", database: shop }}
datasets:
  origin: {{ origin: docs, tables: [live_items] }}
  copies.items: {{ origin: docs, table: live_items, mode: materialize, live: true }}
  copies.gold: {{ origin: docs, table: live_items, filters: {{ tier: gold }}, mode: materialize, live: true }}
local: {{ path: data/local.db }}
"#,
            url = common::mongo_url(),
        ),
    )
    .unwrap();
    let (mut child, c) = serve_and_connect(&file, port).await;
    for d in ["copies.items", "copies.gold"] {
        let s = status_when(&c, d, &format!("{d} streaming"), |r| {
            r[0].as_deref() == Some("streaming")
        })
        .await;
        assert!(s[1].is_some(), "{d} has a resume token: {s:?}");
    }
    let all = "SELECT * FROM origin.live_items ORDER BY _id";
    let gold = "SELECT * FROM origin.live_items WHERE tier = 'gold' ORDER BY _id";
    converges_by(&c, "copies.items", all, "_id").await;
    converges_by(&c, "copies.gold", gold, "_id").await;

    coll.insert_one(doc! {"_id": 100, "name": "new", "qty": 1, "tier": "gold"})
        .await
        .unwrap();
    coll.update_one(doc! {"_id": 3}, doc! {"$set": {"tier": "gold", "qty": 300}})
        .await
        .unwrap();
    coll.update_one(doc! {"_id": 4}, doc! {"$set": {"tier": "free"}})
        .await
        .unwrap();
    coll.replace_one(
        doc! {"_id": 5},
        doc! {"name": "replaced", "qty": 5, "tier": "free"},
    )
    .await
    .unwrap();
    coll.delete_many(doc! {"_id": {"$gte": 40, "$lt": 45}})
        .await
        .unwrap();
    // A multi-document transaction arrives whole.
    let mut session = mongo.start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    coll.insert_one(doc! {"_id": 200, "name": "t1", "qty": 2, "tier": "gold"})
        .session(&mut session)
        .await
        .unwrap();
    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"qty": 1000}})
        .session(&mut session)
        .await
        .unwrap();
    session.commit_transaction().await.unwrap();
    converges_by(&c, "copies.items", all, "_id").await;
    converges_by(&c, "copies.gold", gold, "_id").await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // Restarted: the copy resumes from its stored token, nothing lost or doubled.
    coll.insert_one(doc! {"_id": 300, "name": "while stopped", "qty": 3, "tier": "gold"})
        .await
        .unwrap();
    let (mut child, c) = serve_and_connect(&file, port).await;
    converges_by(&c, "copies.items", all, "_id").await;
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_local_store_stops_a_live_copy_whole_and_keeps_serving_it() {
    let pg = common::pg();
    let origin = reset(&pg).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("switchyard.yaml");
    // 512 kB: the first copy fits, a 20 000-row transaction does not.
    std::fs::write(
        &file,
        config(&pg, 0, "{ path: data/local.db, max_size: 512kB }"),
    )
    .unwrap();
    let config = switchyard_config::Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    let server = switchyard::start(config).await.expect("server starts");
    let c = connect_port(server.addr.port(), KEEPER).await.unwrap();
    status_when(&c, "copies.items", "streaming", |r| {
        r[0].as_deref() == Some("streaming")
    })
    .await;
    origin
        .batch_execute("INSERT INTO live.items VALUES (1001, 'one more', 1, NULL)")
        .await
        .unwrap();
    converges(&c, "copies.items", "SELECT * FROM origin.items ORDER BY id").await;
    origin
        .batch_execute(
            "INSERT INTO live.items SELECT i, repeat('x', 200), i, NULL FROM generate_series(2000, 21999) i",
        )
        .await
        .unwrap();
    let failed = status_when(&c, "copies.items", "a full store", |r| {
        r[0].as_deref() == Some("error")
    })
    .await;
    let why = failed[3].clone().unwrap_or_default();
    assert!(why.contains("53100"), "{why}");
    // Nothing of the transaction was applied; the copy before it is served.
    let n = c
        .query_one("SELECT count(*) FROM copies.items", &[])
        .await
        .unwrap();
    assert_eq!(n.get::<_, i64>(0), 101);
    // Retried with backoff, and still whole.
    status_when(&c, "copies.items", "a retry", |r| {
        r[0].as_deref() == Some("error") && r[3].as_deref().is_some_and(|e| e.contains("53100"))
    })
    .await;
    let n = c
        .query_one("SELECT count(*) FROM copies.items", &[])
        .await
        .unwrap();
    assert_eq!(n.get::<_, i64>(0), 101);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_large_values_and_keyless_replica_identity_full_tables_are_followed() {
    let pg = common::pg();
    let origin = reset(&pg).await;
    origin
        .batch_execute(
            "CREATE TABLE live.wide (id int PRIMARY KEY, big text, n int);
             ALTER TABLE live.wide ALTER COLUMN big SET STORAGE EXTERNAL;
             INSERT INTO live.wide SELECT i, (SELECT string_agg(md5((i * 1000 + g)::text), '') FROM generate_series(1, 200) g), i
               FROM generate_series(1, 5) i;
             CREATE TABLE live.full (a int, b text);
             ALTER TABLE live.full REPLICA IDENTITY FULL;
             INSERT INTO live.full VALUES (1, 'x'), (1, 'x'), (2, NULL), (3, 'z');",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("switchyard.yaml");
    std::fs::write(
        &file,
        format!(
            r#"listen: 127.0.0.1:0
users: [ {{ name: keeper, password: keeper-pw, roles: [keeper] }} ]
roles: {{ keeper: {{ grants: [{{ tables: ["*"], privileges: [select, update] }}] }} }}
origins: {{ types: {{ kind: postgres, url: "{url}" }} }}
datasets:
  origin: {{ origin: types, tables: [live.wide, live.full] }}
  copies.wide: {{ origin: types, table: live.wide, mode: materialize, live: true }}
  copies.full: {{ origin: types, table: live.full, mode: materialize, live: true }}
local: {{ path: data/local.db }}
"#,
            url = pg.url("types", pg.port),
        ),
    )
    .unwrap();
    let config = switchyard_config::Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    let server = switchyard::start(config).await.expect("server starts");
    let c = connect_port(server.addr.port(), KEEPER).await.unwrap();
    for d in ["copies.wide", "copies.full"] {
        status_when(&c, d, &format!("{d} streaming"), |r| {
            r[0].as_deref() == Some("streaming")
        })
        .await;
    }
    // Updating n only: the stored-out-of-line value is not sent, and stays.
    origin
        .batch_execute(
            "UPDATE live.wide SET n = n * 10;
             UPDATE live.wide SET big = 'small now' WHERE id = 5;
             UPDATE live.full SET b = 'y' WHERE a = 2;
             DELETE FROM live.full WHERE ctid = (SELECT ctid FROM live.full WHERE a = 1 LIMIT 1);
             INSERT INTO live.full VALUES (3, 'z');",
        )
        .await
        .unwrap();
    converges(&c, "copies.wide", "SELECT * FROM origin.wide ORDER BY id").await;
    converges_by(
        &c,
        "copies.full",
        "SELECT * FROM origin.full ORDER BY a, b",
        "a, b",
    )
    .await;
    let n = c
        .query_one("SELECT count(*) FROM copies.full", &[])
        .await
        .unwrap();
    assert_eq!(n.get::<_, i64>(0), 4);
    drop(server);
}
