//! Writes through Switchyard to a real PostgreSQL origin: INSERT (with ON CONFLICT),
//! UPDATE and DELETE with RETURNING in both protocols, differential against the same
//! statements on PostgreSQL; the write rules (privileges, denied columns, the row
//! filter as a check) refusing before anything reaches the origin; transaction
//! blocks mapped onto one origin transaction.

use std::time::Duration;

use tokio_postgres::Client;

use crate::common::{self, rows, sqlstate, wait_for, Pg};

const WRITER: (&str, &str) = ("writer", "writer-pw");
const REP: (&str, &str) = ("rep", "rep-pw");
const READER: (&str, &str) = ("reader", "reader-pw");

/// A client of the Switchyard on `port`, as `user`.
async fn connect_to(port: u16, user: (&str, &str)) -> Client {
    crate::materialize::connect_port(port, user)
        .await
        .expect("connects")
}

/// Creates the scratch tables afresh at `database`.
async fn reset(pg: &Pg, database: &str) -> Client {
    let client = pg.direct(database).await;
    let fixture =
        std::fs::read_to_string(common::tests_dir().join("fixtures/scratch.sql")).unwrap();
    client.batch_execute(&fixture).await.unwrap();
    client
}

fn config(pg: &Pg, audit: &std::path::Path) -> String {
    format!(
        r#"listen: 127.0.0.1:0
users:
  - {{ name: writer, password: writer-pw, roles: [writer] }}
  - {{ name: rep, password: rep-pw, roles: [rep], attributes: {{ region: north }} }}
  - {{ name: reader, password: reader-pw, roles: [reader] }}
roles:
  writer:
    grants:
      - {{ tables: ["scratch.*"], privileges: [select, insert, update, delete] }}
      - {{ tables: ["sales.*"], privileges: [select, insert, update, delete] }}
  # North's rep: north's rows only, costs hidden, may not delete.
  rep:
    grants:
      - {{ tables: ["scratch.items"], privileges: [select, insert, update] }}
      - {{ tables: ["sales.secrets"], privileges: [insert] }}
    columns:
      scratch.items: {{ deny: [cost] }}
    row_filters:
      scratch.items: "region = user.region"
  reader: {{ allow: ["scratch.*", "sales.*"] }}
origins:
  types: {{ kind: postgres, url: "{types}" }}
  sales: {{ kind: postgres, url: "{sales}" }}
datasets:
  scratch: {{ origin: types, tables: [scratch.items, scratch.events] }}
  sales: {{ origin: sales, tables: [sales.orders, sales.secrets] }}
audit: {{ path: {audit} }}
"#,
        types = pg.url("types", pg.port),
        sales = pg.url("sales", pg.port),
        audit = audit.display(),
    )
}

struct Writes {
    server: switchyard::Server,
    _dir: tempfile::TempDir,
    pg: Pg,
    origin: Client,
}

impl Writes {
    async fn start() -> Writes {
        let pg = common::pg();
        let origin = reset(&pg, "types").await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("switchyard.yaml");
        std::fs::write(&file, config(&pg, &dir.path().join("audit.jsonl"))).unwrap();
        let config = switchyard_config::Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
        let server = switchyard::start(config).await.expect("server starts");
        Writes {
            server,
            _dir: dir,
            pg,
            origin,
        }
    }

    /// The audit log's records so far.
    fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self._dir.path().join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn port(&self) -> u16 {
        self.server.addr.port()
    }

    async fn connect(&self, user: (&str, &str)) -> Client {
        connect_to(self.port(), user).await
    }

    /// The origin's items, as text, by id.
    async fn items(&self) -> Vec<Vec<Option<String>>> {
        rows(
            &self.origin,
            "SELECT id, name, price, region, cost FROM scratch.items ORDER BY id",
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_slt_through_switchyard_and_on_postgres_end_equal() {
    let w = Writes::start().await;
    let file = common::tests_dir().join("slt/writes/writes.slt");
    let mut failures = Vec::new();
    if let Err(e) = crate::slt::run_file(&file, w.connect(WRITER).await, "switchyard").await {
        failures.push(e);
    }
    let reference = reset(&w.pg, "reference").await;
    if let Err(e) = crate::slt::run_file(&file, reference, "postgres").await {
        failures.push(e);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    let reference = w.pg.direct("reference").await;
    let sql = "SELECT * FROM scratch.items ORDER BY id";
    assert_eq!(rows(&w.origin, sql).await, rows(&reference, sql).await);
    let sql = "SELECT * FROM scratch.events ORDER BY id";
    assert_eq!(rows(&w.origin, sql).await, rows(&reference, sql).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_writes_take_parameters_and_return_rows() {
    let w = Writes::start().await;
    let c = w.connect(WRITER).await;
    let n = c
        .execute(
            "INSERT INTO scratch.items (name, price, region) VALUES ($1, 5.00, $2)",
            &[&"grape", &"south"],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let statement = c
        .prepare("UPDATE scratch.items SET cost = $1 WHERE name = $2 RETURNING id, cost")
        .await
        .unwrap();
    assert_eq!(
        statement.columns().len(),
        2,
        "Describe names RETURNING's columns"
    );
    for (cost, name) in [(7, "grape"), (8, "pear")] {
        let r = c.query(&statement, &[&cost, &name]).await.unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].get::<_, Option<i32>>(1), Some(cost));
    }
    let gone = c
        .execute("DELETE FROM scratch.items WHERE cost >= $1", &[&7i32])
        .await
        .unwrap();
    assert_eq!(gone, 2);
    // The audit record of each write carries the rows it changed.
    let records = w.audit();
    let writes: Vec<(String, u64)> = records
        .iter()
        .filter(|r| r["outcome"] == "ok" && r["tables"].to_string().contains("scratch.items"))
        .map(|r| {
            (
                r["fingerprint"].as_str().unwrap_or_default()[..6].to_string(),
                r["rows"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        writes,
        [
            ("INSERT".to_string(), 1),
            ("UPDATE".to_string(), 1),
            ("UPDATE".to_string(), 1),
            ("DELETE".to_string(), 2)
        ],
        "{records:?}"
    );
    assert_eq!(
        rows(&w.origin, "SELECT count(*) FROM scratch.items").await,
        [[Some("2".to_string())]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_shows_postgres_command_tags() {
    let w = Writes::start().await;
    let port = w.port();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        common::psql(
            port,
            WRITER,
            &[
                "-c",
                "INSERT INTO scratch.items (name) VALUES ('a1'), ('a2'), ('a3')",
                "-c",
                "INSERT INTO scratch.items (name) VALUES ('a4') RETURNING name",
                "-c",
                "UPDATE scratch.items SET cost = 1 WHERE name LIKE 'a_'",
                "-c",
                "DELETE FROM scratch.items WHERE name LIKE 'a_'",
            ],
        )
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    let tags: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("INSERT") || l.starts_with("UPDATE") || l.starts_with("DELETE"))
        .collect();
    assert_eq!(
        tags,
        ["INSERT 0 3", "INSERT 0 1", "UPDATE 4", "DELETE 4"],
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_rules_refuse_before_the_origin_sees_anything() {
    let w = Writes::start().await;
    let before = w.items().await;
    let rep = w.connect(REP).await;
    let reader = w.connect(READER).await;
    let writer = w.connect(WRITER).await;
    // Each refused statement carries a marker; the origin's statement log must not.
    let refused: &[(&Client, &str, &str)] = &[
        (
            &rep,
            "INSERT INTO scratch.items (name, cost) VALUES ('m1', 1)",
            "42501",
        ),
        (
            &rep,
            "UPDATE scratch.items SET cost = 0 WHERE name = 'm2'",
            "42501",
        ),
        (
            &rep,
            "UPDATE scratch.items SET price = 0 WHERE cost = 1 AND name <> 'm3'",
            "42501",
        ),
        (
            &rep,
            "UPDATE scratch.items SET price = 0 WHERE name = 'm4' RETURNING cost",
            "42501",
        ),
        (&rep, "DELETE FROM scratch.items WHERE name = 'm5'", "42501"),
        (
            &rep,
            "INSERT INTO sales.secrets SELECT * FROM sales.secrets WHERE 'm6' = 'm6'",
            "42501",
        ),
        (
            &reader,
            "INSERT INTO scratch.items (name) VALUES ('m7')",
            "25006",
        ),
        (&writer, "DELETE FROM scratch.items", "21000"),
        (&writer, "UPDATE scratch.items SET name = 'm8'", "21000"),
        (
            &writer,
            "WITH d AS (DELETE FROM scratch.items WHERE name = 'm9' RETURNING *) SELECT * FROM d",
            "0A000",
        ),
        (
            &writer,
            "INSERT INTO scratch.items (name) SELECT name FROM scratch.nope WHERE name = 'm10'",
            "42P01",
        ),
    ];
    for (client, sql, code) in refused {
        let e = client.batch_execute(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e), *code, "{sql}: {e:?}");
    }
    let log = w.pg.log_text();
    for i in 1..=10 {
        assert!(
            !log.contains(&format!("'m{i}'")) && !log.contains(&format!("m{i}\n")),
            "refused statement m{i} reached the origin"
        );
    }
    assert_eq!(w.items().await, before, "the origin is unchanged");

    // The row filter as a check: rows outside it cannot be written or left behind.
    let e = rep
        .batch_execute("INSERT INTO scratch.items (name, region) VALUES ('south one', 'south')")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert!(
        common::message(&e).contains("new row violates row-level security policy"),
        "{e:?}"
    );
    let e = rep
        .batch_execute("UPDATE scratch.items SET region = 'south' WHERE name = 'apple'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert_eq!(
        w.items().await,
        before,
        "the failed checks were rolled back"
    );
    // Rows outside the filter are not there to update.
    let n = rep
        .execute(
            "UPDATE scratch.items SET price = 0 WHERE name = 'pear'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(n, 0, "pear is south's");
    let n = rep
        .execute("UPDATE scratch.items SET price = 0.5 WHERE price > 0", &[])
        .await
        .unwrap();
    assert_eq!(n, 2, "north's apple and leek");
    let n = rep
        .execute(
            "INSERT INTO scratch.items (name, price) VALUES ('north one', 1)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        n, 1,
        "a row in the filter (region defaults to north at the origin)"
    );
    // A write-only grant writes without reading.
    let n = rep
        .execute("INSERT INTO sales.secrets (id) VALUES (99001)", &[])
        .await;
    match n {
        Ok(n) => assert_eq!(n, 1),
        Err(e) => panic!("write-only insert: {e:?}"),
    }
    let sales = w.pg.direct("sales").await;
    sales
        .batch_execute("DELETE FROM sales.secrets WHERE id = 99001")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_is_one_origin_transaction() {
    let w = Writes::start().await;
    let before = w.items().await;
    let c = w.connect(WRITER).await;
    // ROLLBACK undoes everything at the origin.
    c.batch_execute(
        "BEGIN;
         INSERT INTO scratch.items (name) VALUES ('t1');
         UPDATE scratch.items SET price = 0 WHERE name = 'apple';
         ROLLBACK;",
    )
    .await
    .unwrap();
    assert_eq!(w.items().await, before);
    // Savepoints: what ROLLBACK TO undoes is undone at the origin too, also when the
    // savepoint was set before the block's first write.
    c.batch_execute(
        "BEGIN;
         SAVEPOINT first;
         INSERT INTO scratch.items (name) VALUES ('t2');
         SAVEPOINT second;
         INSERT INTO scratch.items (name) VALUES ('t3');
         ROLLBACK TO SAVEPOINT second;
         INSERT INTO scratch.items (name) VALUES ('t4');
         COMMIT;",
    )
    .await
    .unwrap();
    let names = |r: Vec<Vec<Option<String>>>| -> Vec<String> {
        r.into_iter().filter_map(|r| r[1].clone()).collect()
    };
    let now = names(w.items().await);
    assert!(now.contains(&"t2".into()) && now.contains(&"t4".into()));
    assert!(!now.contains(&"t3".into()));
    c.batch_execute(
        "BEGIN; SAVEPOINT s; INSERT INTO scratch.items (name) VALUES ('t5'); ROLLBACK TO SAVEPOINT s; COMMIT;",
    )
    .await
    .unwrap();
    assert!(!names(w.items().await).contains(&"t5".into()));

    // An error at the origin fails the block; ROLLBACK TO a savepoint recovers it.
    c.batch_execute("BEGIN; SAVEPOINT s; INSERT INTO scratch.items (name) VALUES ('t6')")
        .await
        .unwrap();
    let e = c
        .batch_execute("INSERT INTO scratch.items (name, region) VALUES ('apple', 'north')")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "23505");
    let e = c.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&e), "25P02");
    c.batch_execute(
        "ROLLBACK TO SAVEPOINT s; INSERT INTO scratch.items (name) VALUES ('t7'); COMMIT",
    )
    .await
    .unwrap();
    let now = names(w.items().await);
    assert!(now.contains(&"t7".into()) && !now.contains(&"t6".into()));
    // COMMIT of a failed block rolls back.
    c.batch_execute("BEGIN; INSERT INTO scratch.items (name) VALUES ('t8')")
        .await
        .unwrap();
    let _ = c
        .batch_execute("SELECT * FROM scratch.nope")
        .await
        .unwrap_err();
    c.batch_execute("COMMIT").await.unwrap();
    assert!(!names(w.items().await).contains(&"t8".into()));

    // Reads inside the block see its writes (also joined with another origin's
    // table, and as an INSERT's source); other sessions do not until COMMIT.
    let other = w.connect(WRITER).await;
    c.batch_execute("BEGIN; INSERT INTO scratch.items (name, price) VALUES ('t11', 11)")
        .await
        .unwrap();
    let mine = "SELECT count(*) FROM scratch.items WHERE name = 't11'";
    assert_eq!(rows(&c, mine).await, [[Some("1".to_string())]]);
    assert_eq!(rows(&other, mine).await, [[Some("0".to_string())]]);
    let joined = rows(
        &c,
        "SELECT i.name, count(o.id) FROM scratch.items i JOIN sales.orders o ON o.id <= i.price WHERE i.name = 't11' GROUP BY i.name",
    )
    .await;
    assert_eq!(joined, [[Some("t11".to_string()), Some("11".to_string())]]);
    c.batch_execute(
        "INSERT INTO scratch.items (name, price) SELECT name || '-again', price FROM scratch.items WHERE name = 't11';
         UPDATE scratch.items SET price = 12 WHERE name = 't11-again'",
    )
    .await
    .unwrap();
    assert_eq!(
        rows(
            &c,
            "SELECT price FROM scratch.items WHERE name = 't11-again'"
        )
        .await,
        [[Some("12.00".to_string())]]
    );
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        rows(
            &other,
            "SELECT count(*) FROM scratch.items WHERE name LIKE 't11%'"
        )
        .await,
        [[Some("2".to_string())]]
    );

    // A second origin in one block is refused before anything is sent there.
    c.batch_execute("BEGIN; INSERT INTO scratch.items (name) VALUES ('t9')")
        .await
        .unwrap();
    let e = c
        .batch_execute("UPDATE sales.orders SET amount = amount WHERE id = 424242")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "0A000");
    assert!(common::message(&e).contains("two-phase commit"), "{e:?}");
    assert!(!w.pg.log_text().contains("424242"));
    c.batch_execute("ROLLBACK").await.unwrap();
    assert!(!names(w.items().await).contains(&"t9".into()));

    // A client that goes away mid-block rolls back at the origin.
    let gone = w.connect(WRITER).await;
    gone.batch_execute("BEGIN; INSERT INTO scratch.items (name) VALUES ('t10')")
        .await
        .unwrap();
    drop(gone);
    wait_for(
        "the abandoned transaction to end at the origin",
        Duration::from_secs(10),
        || async {
            let open = rows(
                &w.origin,
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'switchyard' AND state LIKE 'idle in transaction%'",
            )
            .await;
            (open == [[Some("0".to_string())]]).then_some(())
        },
    )
    .await;
    assert!(!names(w.items().await).contains(&"t10".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_from_stdin_inserts_in_batches_or_keeps_nothing() {
    let w = Writes::start().await;
    let dir = tempfile::tempdir().unwrap();
    // psql's \copy, text format: 2 500 rows (three inserts at the origin), escapes, NULLs.
    let mut text = String::new();
    for i in 0..2500 {
        text.push_str(&format!("c{i}\t{}.5\t{{x,y}}\tnorth\n", i % 7));
    }
    text.push_str("tab\\there\t1\t\\N\tsouth\n");
    let file = dir.path().join("items.txt");
    std::fs::write(&file, &text).unwrap();
    let csv = dir.path().join("items.csv");
    std::fs::write(&csv, "name,price\n\"quoted, \"\"name\"\"\",2\nplain,\n").unwrap();
    let port = w.port();
    let (f, c) = (file.display().to_string(), csv.display().to_string());
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        common::psql(
            port,
            WRITER,
            &[
                "-c",
                &format!("\\copy scratch.items (name, price, tags, region) from '{f}'"),
                "-c",
                &format!(
                    "\\copy scratch.items (name, price) from '{c}' with (format csv, header true)"
                ),
            ],
        )
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["COPY 2501", "COPY 2"],
        "{out}"
    );
    let counted = rows(
        &w.origin,
        "SELECT count(*), count(*) FILTER (WHERE tags = '{x,y}'), count(*) FILTER (WHERE region = 'south') FROM scratch.items WHERE name LIKE 'c%'",
    )
    .await;
    assert_eq!(
        counted,
        [[
            Some("2500".to_string()),
            Some("2500".to_string()),
            Some("0".to_string())
        ]]
    );
    assert_eq!(
        rows(
            &w.origin,
            "SELECT name, price, region FROM scratch.items WHERE name IN ('tab\there', 'quoted, \"name\"', 'plain') ORDER BY name"
        )
        .await,
        [
            [Some("plain".into()), None, Some("north".into())],
            [Some("quoted, \"name\"".into()), Some("2.00".into()), Some("north".into())],
            [Some("tab\there".into()), Some("1.00".into()), Some("south".into())],
        ]
    );

    // The extended protocol (tokio-postgres' copy_in), in a block that rolls back.
    use futures::SinkExt;
    let c = w.connect(WRITER).await;
    c.batch_execute("BEGIN").await.unwrap();
    let sink = c
        .copy_in("COPY scratch.items (name, cost) FROM STDIN")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"e1\t1\ne2\t2\n"))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);
    assert_eq!(
        rows(
            &c,
            "SELECT count(*) FROM scratch.items WHERE name LIKE 'e_'"
        )
        .await,
        [[Some("2".to_string())]]
    );
    c.batch_execute("ROLLBACK").await.unwrap();
    let before = w.items().await;

    // A bad line, a row outside the copier's filter, a denied column: nothing kept.
    let rep = w.connect(REP).await;
    let failures: [(&Client, &str, &[u8], &str); 3] = [
        (
            &c,
            "COPY scratch.items (name, cost) FROM STDIN",
            b"ok1\t1\nbad\n",
            "22P04",
        ),
        (
            &rep,
            "COPY scratch.items (name, region) FROM STDIN",
            b"n1\tnorth\ns1\tsouth\n",
            "42501",
        ),
        (
            &rep,
            "COPY scratch.items (name, cost) FROM STDIN",
            b"x\t1\n",
            "42501",
        ),
    ];
    for (client, sql, data, code) in failures {
        let outcome = async {
            let sink = client.copy_in(sql).await?;
            futures::pin_mut!(sink);
            sink.send(bytes::Bytes::from_static(data)).await?;
            sink.finish().await
        }
        .await;
        let e = outcome.expect_err(sql);
        assert_eq!(sqlstate(&e), code, "{sql}: {e:?}");
    }
    assert_eq!(
        w.items().await,
        before,
        "nothing of the failed copies is kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_collections_take_writes_in_their_own_types() {
    use mongodb::bson::{doc, oid::ObjectId, Bson, Decimal128, Document};
    let pg = common::pg();
    let client = mongodb::Client::with_uri_str(common::mongo_url())
        .await
        .unwrap();
    let db = client.database("writes_test");
    let items = db.collection::<Document>("items");
    items.drop().await.unwrap();
    let first = ObjectId::parse_str("65a000000000000000000001").unwrap();
    items
        .insert_many([
            doc! {"_id": first, "name": "apple", "qty": 5_i32, "price": "1.25".parse::<Decimal128>().unwrap(), "region": "north",
                  "at": mongodb::bson::DateTime::from_millis(1_700_000_000_000), "tags": ["a"]},
            doc! {"_id": ObjectId::parse_str("65a000000000000000000002").unwrap(), "name": "pear", "region": "south",
                  "price": "2.50".parse::<Decimal128>().unwrap(), "qty": 2_i32, "at": mongodb::bson::DateTime::from_millis(1_700_000_000_000), "tags": []},
        ])
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("switchyard.yaml");
    std::fs::write(
        &file,
        format!(
            r#"listen: 127.0.0.1:0
users:
  - {{ name: writer, password: writer-pw, roles: [writer] }}
  - {{ name: rep, password: rep-pw, roles: [rep], attributes: {{ region: north }} }}
roles:
  writer: {{ grants: [{{ tables: ["docs.*", "scratch.*"], privileges: [select, insert, update, delete] }}] }}
  rep:
    grants: [{{ tables: ["docs.items"], privileges: [select, insert, update] }}]
    row_filters: {{ docs.items: "region = user.region" }}
origins:
  mongo: {{ kind: mongodb, url: "{url}", database: writes_test }}
  types: {{ kind: postgres, url: "{types}" }}
datasets:
  docs: {{ origin: mongo, tables: [items] }}
  scratch: {{ origin: types, tables: [scratch.items] }}
"#,
            url = common::mongo_url(),
            types = pg.url("types", pg.port),
        ),
    )
    .unwrap();
    reset(&pg, "types").await;
    let config = switchyard_config::Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    let server = switchyard::start(config).await.expect("server starts");
    let c = connect_to(server.addr.port(), WRITER).await;

    let inserted = rows(
        &c,
        "INSERT INTO docs.items (_id, name, qty, price, region, at, tags) VALUES
           ('65a000000000000000000003', 'plum', 7, 3.10, 'north', '2024-02-08 17:18:30+00', ARRAY['x', 'y']),
           ('not-an-object-id', 'kale', NULL, NULL, 'south', NULL, NULL)
         RETURNING _id, name, price",
    )
    .await;
    assert_eq!(
        inserted,
        [
            [
                Some("65a000000000000000000003".into()),
                Some("plum".into()),
                Some("3.10".into())
            ],
            [Some("not-an-object-id".into()), Some("kale".into()), None],
        ]
    );
    let plum = items
        .find_one(doc! {"name": "plum"})
        .await
        .unwrap()
        .expect("plum is there");
    assert!(matches!(plum.get("_id"), Some(Bson::ObjectId(_))), "{plum}");
    assert!(
        matches!(plum.get("price"), Some(Bson::Decimal128(_))),
        "{plum}"
    );
    assert!(matches!(plum.get("at"), Some(Bson::DateTime(_))), "{plum}");
    assert!(
        matches!(plum.get("tags"), Some(Bson::Array(a)) if a.len() == 2),
        "{plum}"
    );
    let kale = items
        .find_one(doc! {"name": "kale"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        kale.get("_id"),
        Some(&Bson::String("not-an-object-id".into()))
    );
    assert!(kale.get("qty").is_none(), "NULLs are left out: {kale}");

    // SQL's three-valued logic: `qty <> 5` matches neither apple nor kale (NULL qty).
    let n = c
        .execute("UPDATE docs.items SET region = 'east' WHERE qty <> 5", &[])
        .await
        .unwrap();
    assert_eq!(n, 2, "pear and plum");
    assert_eq!(
        rows(
            &c,
            "SELECT name FROM docs.items WHERE region = 'east' ORDER BY name"
        )
        .await,
        [[Some("pear".to_string())], [Some("plum".to_string())]]
    );
    let e = c
        .batch_execute("UPDATE docs.items SET qty = qty + 1 WHERE name = 'apple'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "0A000", "{e:?}");
    let e = c
        .batch_execute(
            "INSERT INTO docs.items (_id, name) VALUES ('65a000000000000000000001', 'dup')",
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "23505", "{e:?}");
    let gone = rows(
        &c,
        "DELETE FROM docs.items WHERE region = 'east' RETURNING name",
    )
    .await;
    assert_eq!(gone.len(), 2);
    assert_eq!(items.count_documents(doc! {}).await.unwrap(), 2);

    // A block: rolled back at MongoDB; a second origin refused.
    c.batch_execute("BEGIN; INSERT INTO docs.items (name) VALUES ('fig')")
        .await
        .unwrap();
    let e = c
        .batch_execute("INSERT INTO scratch.items (name) VALUES ('nope')")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "0A000");
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        items.count_documents(doc! {"name": "fig"}).await.unwrap(),
        0
    );
    c.batch_execute("BEGIN; INSERT INTO docs.items (name) VALUES ('fig'); COMMIT")
        .await
        .unwrap();
    assert_eq!(
        items.count_documents(doc! {"name": "fig"}).await.unwrap(),
        1
    );

    // The row filter as a check, for inserts and for updates' new state.
    let rep = connect_to(server.addr.port(), REP).await;
    for sql in [
        "INSERT INTO docs.items (name, region) VALUES ('s', 'south')",
        "UPDATE docs.items SET region = 'south' WHERE name = 'apple'",
    ] {
        let e = rep.batch_execute(sql).await.unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{sql}: {e:?}");
    }
    let n = rep
        .execute(
            "UPDATE docs.items SET qty = 6 WHERE name IN ('apple', 'kale')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(n, 1, "kale is south's");
    let apple = items.find_one(doc! {"_id": first}).await.unwrap().unwrap();
    assert_eq!(apple.get("qty"), Some(&Bson::Int32(6)));
    assert_eq!(apple.get("region"), Some(&Bson::String("north".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_store_takes_writes_for_roles_granted_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("local.db");
    rusqlite::Connection::open(&store)
        .unwrap()
        .execute_batch(
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL, stars INTEGER);
             INSERT INTO notes VALUES (1, 'first', 3);",
        )
        .unwrap();
    let file = dir.path().join("switchyard.yaml");
    std::fs::write(
        &file,
        format!(
            r#"listen: 127.0.0.1:0
users:
  - {{ name: writer, password: writer-pw, roles: [writer] }}
  - {{ name: reader, password: reader-pw, roles: [reader] }}
roles:
  writer: {{ grants: [{{ tables: ["local.*"], privileges: [select, insert, update, delete] }}] }}
  reader: {{ allow: ["local.*"] }}
origins: {{}}
datasets: {{}}
local: {{ path: {store} }}
"#,
            store = store.display()
        ),
    )
    .unwrap();
    let config = switchyard_config::Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    let server = switchyard::start(config).await.expect("server starts");
    let c = connect_to(server.addr.port(), WRITER).await;
    let returned = rows(
        &c,
        "INSERT INTO local.notes (id, body, stars) VALUES (2, 'it''s', 4), (3, 'third', NULL) RETURNING id, body",
    )
    .await;
    assert_eq!(
        returned,
        [
            [Some("2".to_string()), Some("it's".to_string())],
            [Some("3".to_string()), Some("third".to_string())]
        ]
    );
    assert_eq!(
        c.execute(
            "UPDATE local.notes SET stars = 5 WHERE stars IS NULL OR stars > 3",
            &[]
        )
        .await
        .unwrap(),
        2
    );
    c.batch_execute(
        "BEGIN; DELETE FROM local.notes WHERE id = 1; SAVEPOINT s; DELETE FROM local.notes WHERE id = 2;
         ROLLBACK TO SAVEPOINT s; COMMIT;",
    )
    .await
    .unwrap();
    c.batch_execute("BEGIN; INSERT INTO local.notes (id, body) VALUES (9, 'gone'); ROLLBACK")
        .await
        .unwrap();
    let e = c
        .batch_execute("INSERT INTO local.notes (id, body) VALUES (2, 'dup')")
        .await
        .unwrap_err();
    assert!(!sqlstate(&e).is_empty());
    assert_eq!(
        rows(&c, "SELECT id, body, stars FROM local.notes ORDER BY id").await,
        [
            [
                Some("2".to_string()),
                Some("it's".to_string()),
                Some("5".to_string())
            ],
            [
                Some("3".to_string()),
                Some("third".to_string()),
                Some("5".to_string())
            ]
        ]
    );
    let reader = connect_to(server.addr.port(), READER).await;
    let e = reader
        .batch_execute("DELETE FROM local.notes WHERE id = 2")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "25006");
}
