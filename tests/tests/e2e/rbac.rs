//! What a governed role sees, through the clients people use: psql's listings and
//! `\d`, information_schema, and the data itself (row filter and mask applied).

use crate::common;
use crate::common::{rows, Harness, CRM_ONLY, NORTH_REP};

fn psql(port: u16, user: (&str, &str), args: &[&str]) -> String {
    let (ok, out, err) = common::psql(port, user, args);
    assert!(ok, "psql {args:?} failed: {err}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_shows_a_governed_role_its_rows_masked_and_its_tables_only() {
    let h = Harness::start().await;
    let port = h.port();
    let out = tokio::task::spawn_blocking(move || {
        psql(
            port,
            NORTH_REP,
            &[
                "-c",
                "\\dt sales.*",
                "-c",
                "\\d sales.customers",
                "-c",
                "SELECT id, email, region FROM sales.customers ORDER BY id LIMIT 3",
            ],
        )
    })
    .await
    .unwrap();
    // \dt: the two granted sales tables, not the secrets.
    assert!(out.contains("customers") && out.contains("orders"), "{out}");
    assert!(
        !out.contains("secrets"),
        "\\dt must not list sales.secrets:\n{out}"
    );
    // \d: the denied column is absent; the hashed e-mail reads as text.
    let described: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.contains("Table \"sales.customers\""))
        .take_while(|l| !l.trim().is_empty())
        .collect();
    let described = described.join("\n");
    assert!(described.contains("region"), "{described}");
    assert!(
        !described.contains("created_at"),
        "\\d shows a denied column:\n{described}"
    );
    let email = described
        .lines()
        .find(|l| l.trim_start().starts_with("email"))
        .unwrap_or_else(|| panic!("no email line:\n{described}"));
    assert!(
        email.contains("text") || email.contains("character varying"),
        "{email}"
    );
    // The rows: north only, e-mails as MD5 hex (customer 4 is c4@example.com).
    assert!(out.contains("98c7f04d5a4d21c2ea97d0e356225555"), "{out}");
    assert!(!out.contains("@example.com"), "an e-mail leaked:\n{out}");
    for l in out
        .lines()
        .filter(|l| l.contains('|') && !l.contains("region"))
    {
        if l.trim_start()
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
        {
            assert!(
                l.trim_end().ends_with("north"),
                "row outside the filter: {l}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogs_list_only_readable_tables() {
    let h = Harness::start().await;
    let crm = h.connect(CRM_ONLY.0, CRM_ONLY.1).await.unwrap();
    let listed = rows(
        &crm,
        "SELECT table_schema || '.' || table_name FROM information_schema.tables \
         WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
    )
    .await;
    let listed: Vec<String> = listed.into_iter().filter_map(|r| r[0].clone()).collect();
    assert_eq!(listed, vec!["crm.accounts".to_string()]);
    let pg = rows(
        &crm,
        "SELECT n.nspname || '.' || c.relname FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
    )
    .await;
    let pg: Vec<String> = pg.into_iter().filter_map(|r| r[0].clone()).collect();
    assert_eq!(pg, vec!["crm.accounts".to_string()]);
    let shown = rows(&crm, "SHOW TABLES").await;
    let shown: Vec<String> = shown.iter().map(|r| format!("{:?}", r)).collect();
    assert!(shown.iter().any(|r| r.contains("accounts")), "{shown:?}");
    assert!(
        !shown
            .iter()
            .any(|r| r.contains("orders") || r.contains("secrets")),
        "{shown:?}"
    );
    // The analyst (everything but the secrets) sees many tables, still not the secrets.
    let analyst = h.analyst().await;
    let all = rows(
        &analyst,
        "SELECT count(*), count(*) FILTER (WHERE table_name = 'secrets') \
         FROM information_schema.tables WHERE table_schema = 'sales'",
    )
    .await;
    assert_eq!(all[0][1].as_deref(), Some("0"));
    assert!(all[0][0].as_deref().unwrap().parse::<i64>().unwrap() >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_statements_per_user_are_limited_and_slots_come_back() {
    let h = Harness::start().await;
    let slow = h.connect(common::CAPPED.0, common::CAPPED.1).await.unwrap();
    let other = h.connect(common::CAPPED.0, common::CAPPED.1).await.unwrap();
    let running = tokio::spawn(async move {
        // Runs until the role's 1 s statement_timeout stops it.
        slow.simple_query(common::SLOW_QUERY)
            .await
            .map(|_| ())
            .map_err(|e| common::sqlstate(&e))
    });
    // Once the slow statement holds the user's one slot, a second one is refused.
    common::wait_for(
        "the slow statement to run",
        std::time::Duration::from_secs(10),
        || async { (h.server.engine.running_statements() > 0).then_some(()) },
    )
    .await;
    let e = other
        .simple_query("SELECT 1")
        .await
        .expect_err("second statement at once");
    assert_eq!(common::sqlstate(&e), "53400", "{}", common::message(&e));
    assert_eq!(running.await.unwrap(), Err("57014".to_string()));
    // The slot is free again.
    assert_eq!(
        rows(&other, "SELECT 1").await,
        vec![vec![Some("1".to_string())]]
    );
}

/// `sql` fails with 57014 within `seconds`.
async fn times_out(c: &tokio_postgres::Client, sql: &str, seconds: u64) {
    let started = std::time::Instant::now();
    let e = c.simple_query(sql).await.expect_err("times out");
    assert_eq!(common::sqlstate(&e), "57014", "{}", common::message(&e));
    assert!(started.elapsed() < std::time::Duration::from_secs(seconds));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_statement_timeout_is_enforced_by_the_origin() {
    let pg = common::pg();
    let origin = format!(
        "  slow_sales: {{ kind: postgres, url: \"{}\", statement_timeout: 300ms }}",
        pg.url("sales", pg.port)
    );
    let h = Harness::start_with(
        &origin,
        "  slow: { origin: slow_sales, tables: [sales.orders] }",
        |_| {},
    )
    .await;
    let c = h.analyst().await;
    // A billion-row count at the origin: PostgreSQL itself gives up after 300 ms.
    times_out(
        &c,
        "SELECT count(*) FROM slow.orders a, slow.orders b, slow.orders c",
        10,
    )
    .await;
    // Quick statements at that origin are unaffected.
    assert_eq!(
        rows(&c, "SELECT count(*) FROM slow.orders").await,
        vec![vec![Some("3000".to_string())]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_statement_timeout_stops_a_long_statement() {
    let h = Harness::start().await;
    let c = h.analyst().await;
    c.simple_query("SET statement_timeout = 300").await.unwrap();
    times_out(&c, common::SLOW_QUERY, 5).await;
    assert_eq!(
        rows(&c, "SELECT 1").await,
        vec![vec![Some("1".to_string())]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_row_filter_runs_at_the_origin_and_the_mask_does_not() {
    let h = Harness::start().await;
    let c = h.connect(NORTH_REP.0, NORTH_REP.1).await.unwrap();
    let plan = common::explain(&c, "SELECT email FROM sales.customers WHERE id = 4").await;
    let origin_sql: Vec<&str> = plan.lines().filter(|l| l.contains("sql=")).collect();
    assert_eq!(origin_sql.len(), 1, "{plan}");
    let sql = origin_sql[0];
    assert!(
        sql.contains("'north'") && sql.contains("\"region\""),
        "row filter at the origin: {plan}"
    );
    assert!(
        sql.contains("\"id\" = 4"),
        "the user's filter at the origin too: {plan}"
    );
    assert!(
        !sql.to_lowercase().contains("md5"),
        "the mask stays in Switchyard: {plan}"
    );
    assert!(
        plan.to_lowercase().contains("md5"),
        "the mask is applied: {plan}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_read_the_checked_plan() {
    let h = Harness::start().await;
    let c = h.connect(NORTH_REP.0, NORTH_REP.1).await.unwrap();
    c.simple_query("BEGIN").await.unwrap();
    c.simple_query(
        "DECLARE cur CURSOR FOR SELECT id, email, region FROM sales.customers ORDER BY id",
    )
    .await
    .unwrap();
    let first = rows(&c, "FETCH 2 FROM cur").await;
    assert_eq!(
        first,
        vec![
            vec![
                Some("4".into()),
                Some("98c7f04d5a4d21c2ea97d0e356225555".into()),
                Some("north".into())
            ],
            vec![
                Some("8".into()),
                Some("efa7fe1ca1e1e7649190578907d07df0".into()),
                Some("north".into())
            ],
        ]
    );
    let rest = rows(&c, "FETCH ALL FROM cur").await;
    assert_eq!(rest.len(), 48, "50 north customers in all");
    assert!(rest.iter().all(|r| r[2].as_deref() == Some("north")));
    c.simple_query("CLOSE cur").await.unwrap();
    c.simple_query("COMMIT").await.unwrap();
    // A cursor over a denied column or table is refused at DECLARE.
    c.simple_query("BEGIN").await.unwrap();
    let e = c
        .simple_query("DECLARE bad CURSOR FOR SELECT created_at FROM sales.customers")
        .await
        .expect_err("denied column");
    assert_eq!(common::sqlstate(&e), "42501");
    c.simple_query("ROLLBACK").await.unwrap();
    let a = h.analyst().await;
    a.simple_query("BEGIN").await.unwrap();
    let e = a
        .simple_query("DECLARE s CURSOR FOR SELECT * FROM sales.secrets")
        .await
        .expect_err("denied table");
    assert_eq!(common::sqlstate(&e), "42501");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_are_refused_while_the_audit_log_cannot_be_written() {
    // /dev/full accepts the open and fails every write with ENOSPC, as a full disk does.
    let h = Harness::start_full("audit: { path: /dev/full, fsync: never }\n", "", "", |_| {}).await;
    let c = h.analyst().await;
    // The first statement runs; its record is the write that fails.
    assert_eq!(
        rows(&c, "SELECT 1").await,
        vec![vec![Some("1".to_string())]]
    );
    let e = common::wait_for(
        "statements to be refused",
        std::time::Duration::from_secs(10),
        || async { c.simple_query("SELECT 2").await.err() },
    )
    .await;
    assert_eq!(common::sqlstate(&e), "53100", "{}", common::message(&e));
    assert!(
        common::message(&e).contains("audit log"),
        "{}",
        common::message(&e)
    );
    let e = c
        .query("SELECT 3", &[])
        .await
        .expect_err("extended protocol too");
    assert_eq!(common::sqlstate(&e), "53100");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn information_schema_columns_are_the_users_columns() {
    let h = Harness::start().await;
    let c = h.connect(NORTH_REP.0, NORTH_REP.1).await.unwrap();
    let columns = rows(
        &c,
        "SELECT column_name, data_type FROM information_schema.columns \
         WHERE table_schema = 'sales' AND table_name = 'customers' ORDER BY ordinal_position",
    )
    .await;
    let names: Vec<&str> = columns.iter().map(|r| r[0].as_deref().unwrap()).collect();
    assert_eq!(names, vec!["id", "name", "email", "region"]);
    // The analyst (no column rules) sees all five.
    let a = h.analyst().await;
    let all = rows(
        &a,
        "SELECT count(*) FROM information_schema.columns \
         WHERE table_schema = 'sales' AND table_name = 'customers'",
    )
    .await;
    assert_eq!(all, vec![vec![Some("5".to_string())]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_copy_to_a_file_goes_through_the_same_checks() {
    let h = Harness::start().await;
    let port = h.port();
    let dir = h.dir.path().to_path_buf();
    let (csv, text, denied, table) = tokio::task::spawn_blocking(move || {
        let csv = dir.join("north.csv");
        let text = dir.join("two.txt");
        let table = dir.join("accounts.txt");
        let copy_csv = format!(
            "\\copy (SELECT id, email, region FROM sales.customers ORDER BY id LIMIT 3) to '{}' with (format csv, header)",
            csv.display()
        );
        let r = common::psql(port, NORTH_REP, &["-c", &copy_csv]);
        assert!(r.0, "{r:?}");
        assert!(r.1.contains("COPY 3"), "{r:?}");
        let copy_text = format!(
            "\\copy (SELECT id, email FROM sales.customers WHERE id IN (6, 7) ORDER BY id) to '{}'",
            text.display()
        );
        let r = common::psql(port, common::ANALYST, &["-c", &copy_text]);
        assert!(r.0, "{r:?}");
        let copy_table = format!("\\copy crm.accounts (id, tier) to '{}'", table.display());
        let r = common::psql(port, CRM_ONLY, &["-c", &copy_table]);
        assert!(r.0, "{r:?}");
        let denied = common::psql(
            port,
            common::ANALYST,
            &["-c", &format!("\\copy sales.secrets to '{}'", dir.join("x").display())],
        );
        (
            std::fs::read_to_string(csv).unwrap(),
            std::fs::read_to_string(text).unwrap(),
            denied,
            std::fs::read_to_string(table).unwrap(),
        )
    })
    .await
    .unwrap();
    assert_eq!(
        csv,
        "id,email,region\n\
         4,98c7f04d5a4d21c2ea97d0e356225555,north\n\
         8,efa7fe1ca1e1e7649190578907d07df0,north\n\
         12,32e61623adceacb75c5963952ef387f3,north\n"
    );
    assert_eq!(text, "6\tc6@example.com\n7\t\\N\n");
    assert_eq!(table.lines().count(), 200, "{table}");
    assert!(
        !denied.0
            && denied
                .2
                .contains("permission denied for table sales.secrets"),
        "{denied:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_declared_through_the_extended_protocol_read_the_checked_plan() {
    let h = Harness::start().await;
    let mut c = h.connect(NORTH_REP.0, NORTH_REP.1).await.unwrap();
    let tx = c.transaction().await.unwrap();
    // As psycopg 3's server-side cursors do: DECLARE with a parameter, then FETCH.
    let declare = tx
        .prepare("DECLARE cur CURSOR FOR SELECT id, email FROM sales.customers WHERE id > $1 ORDER BY id")
        .await
        .unwrap();
    assert!(declare.columns().is_empty(), "DECLARE returns no rows");
    tx.execute(&declare, &[&10i32]).await.unwrap();
    let fetched = tx.simple_query("FETCH 2 FROM cur").await.unwrap();
    let got: Vec<(String, String)> = fetched
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some((
                r.get(0).unwrap().to_string(),
                r.get(1).unwrap_or("NULL").to_string(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "12".to_string(),
                "32e61623adceacb75c5963952ef387f3".to_string()
            ),
            (
                "16".to_string(),
                "1d12420c502e7ffa75c1cdf123c64132".to_string()
            ),
        ]
    );
    tx.rollback().await.unwrap();
    // A denied column is refused at Parse.
    let e = c
        .prepare("DECLARE bad CURSOR FOR SELECT created_at FROM sales.customers")
        .await
        .expect_err("denied column");
    assert_eq!(common::sqlstate(&e), "42501");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_row_cap_streams_and_the_cut_is_audited() {
    let h = Harness::start_full("guardrails: { max_rows: 15000 }\n", "", "", |_| {}).await;
    let c = h.analyst().await;
    let got = rows(&c, "SELECT i FROM generate_series(1, 20000) t(i)").await;
    assert_eq!(got.len(), 15000);
    let path = h.dir.path().join("data/audit.jsonl");
    let last: serde_json::Value = common::wait_for(
        "the statement's audit record",
        std::time::Duration::from_secs(10),
        || async {
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            let last: serde_json::Value = serde_json::from_str(log.lines().last()?).ok()?;
            (last["rows"] == 15000).then_some(last)
        },
    )
    .await;
    assert_eq!(last["rows"], 15000);
    assert!(last["warnings"].to_string().contains("max_rows"), "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fsync_interval_an_idle_log_is_synced_within_seconds() {
    let h = Harness::start().await;
    let c = h.analyst().await;
    rows(&c, "SELECT 1").await;
    rows(&c, "SELECT 2").await;
    // The syncer runs every second: the head file catches up without another statement.
    let (head, records) = common::wait_for(
        "the head file to count every record",
        std::time::Duration::from_secs(5),
        || async {
            let log = std::fs::read_to_string(h.dir.path().join("data/audit.jsonl")).ok()?;
            let head = std::fs::read_to_string(h.dir.path().join("data/audit.jsonl.head")).ok()?;
            let records = log.lines().count();
            (head.split_whitespace().next() == Some(records.to_string().as_str()))
                .then_some((head, records))
        },
    )
    .await;
    assert_eq!(
        head.split_whitespace().next(),
        Some(records.to_string().as_str()),
        "{head}"
    );
    assert_eq!(
        switchyard_safety::verify(&h.dir.path().join("data/audit.jsonl")),
        Ok(records as u64)
    );
}

/// The origins' keys and indexes follow the grants: a role sees constraints and
/// indexes only on tables it may read, and none naming a column it may not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_facts_follow_grants_and_denied_columns() {
    let h = Harness::start().await;
    const CONSTRAINTS: &str = "SELECT c.relname || '.' || con.conname || ' ' || con.contype \
        FROM pg_catalog.pg_constraint con JOIN pg_catalog.pg_class c ON c.oid = con.conrelid \
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'sales' \
        ORDER BY 1";
    const INDEXES: &str = "SELECT t.relname || '.' || ci.relname \
        FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ci ON ci.oid = i.indexrelid \
        JOIN pg_catalog.pg_class t ON t.oid = i.indrelid \
        JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = 'sales' \
        ORDER BY 1";
    let flat = |r: Vec<Vec<Option<String>>>| -> Vec<String> {
        r.into_iter()
            .map(|r| r[0].clone().unwrap_or_default())
            .collect()
    };

    let analyst = h.analyst().await;
    assert_eq!(
        flat(rows(&analyst, INDEXES).await),
        vec![
            "customers.customers_created_at_idx",
            "customers.customers_email_key",
            "customers.customers_pkey",
            "orders.orders_customer_time_idx",
            "orders.orders_pkey",
        ]
    );

    // north_rep: customers without created_at, orders.
    let north = h.connect(NORTH_REP.0, NORTH_REP.1).await.unwrap();
    assert_eq!(
        flat(rows(&north, CONSTRAINTS).await),
        vec![
            "customers.customers_email_key u",
            "customers.customers_pkey p",
            "orders.orders_customer_id_fkey f",
            "orders.orders_pkey p",
        ]
    );
    let indexes = flat(rows(&north, INDEXES).await);
    assert!(
        !indexes.iter().any(|i| i.contains("created_at")),
        "an index on a denied column is listed: {indexes:?}"
    );
    assert_eq!(indexes.len(), 4, "{indexes:?}");

    // crm_only reads no sales table: no sales constraints or indexes at all.
    let crm = h.connect(CRM_ONLY.0, CRM_ONLY.1).await.unwrap();
    assert!(rows(&crm, CONSTRAINTS).await.is_empty());
    assert!(rows(&crm, INDEXES).await.is_empty());
}
