//! The pgwire front door through tokio-postgres: authentication, session statements,
//! SQLSTATEs of mistakes, and the extended protocol with parameters.

use crate::common::{message, rows, sqlstate, Harness, ANALYST, CRM_ONLY};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_login_and_wrong_or_unknown_credentials() {
    let h = Harness::start().await;
    let client = h.analyst().await;
    assert_eq!(
        rows(&client, "SELECT 1 + 1").await,
        vec![vec![Some("2".into())]]
    );

    let wrong = h
        .connect(ANALYST.0, "not-the-password")
        .await
        .expect_err("wrong password must fail");
    assert_eq!(sqlstate(&wrong), "28P01");
    assert!(
        message(&wrong).contains("\"analyst\""),
        "names the user: {}",
        message(&wrong)
    );
    let unknown = h
        .connect("mallory", "whatever")
        .await
        .expect_err("unknown user must fail");
    assert_eq!(
        sqlstate(&unknown),
        "28P01",
        "an unknown user looks like a wrong password"
    );

    // The failed logins did not disturb the open session.
    assert_eq!(
        rows(&client, "SELECT 2").await,
        vec![vec![Some("2".into())]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_user_is_the_session_user() {
    let h = Harness::start().await;
    let analyst = h.analyst().await;
    let crm = h.connect(CRM_ONLY.0, CRM_ONLY.1).await.unwrap();
    assert_eq!(
        rows(&analyst, "SELECT current_user").await,
        vec![vec![Some("analyst".into())]]
    );
    assert_eq!(
        rows(&crm, "SELECT session_user").await,
        vec![vec![Some("crm_only".into())]]
    );
    let row = analyst
        .query_one("SELECT current_user AS u", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>("u"), "analyst");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_statements_as_orms_send_them() {
    let h = Harness::start().await;
    let mut c = h.analyst().await;
    for sql in [
        "SET application_name = 'orm'",
        "SET search_path TO public",
        "SET TIME ZONE 'UTC'",
        "SET statement_timeout = 0",
        "SET extra_float_digits = 3",
        "BEGIN",
        "COMMIT",
        "BEGIN ISOLATION LEVEL READ COMMITTED",
        "ROLLBACK",
        "START TRANSACTION",
        "COMMIT",
    ] {
        c.simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }
    assert_eq!(
        rows(&c, "SHOW application_name").await,
        vec![vec![Some("orm".into())]]
    );
    let tz = rows(&c, "SHOW TIME ZONE").await;
    assert_eq!(tz.len(), 1);
    assert!(!rows(&c, "SHOW server_version").await[0][0]
        .as_deref()
        .unwrap_or("")
        .is_empty());
    // A transaction block around a cross-origin read, as drivers with autocommit off do it.
    let tx = c.transaction().await.unwrap();
    let n: i64 = tx
        .query_one("SELECT count(*) FROM sales.orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3000);
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistakes_get_their_sqlstate_not_xx000() {
    let h = Harness::start().await;
    let c = h.analyst().await;
    let cases = [
        ("SELECT * FROM sales.nope", "42P01"),
        ("SELECT * FROM nowhere.orders", "42P01"),
        ("SELECT nope FROM sales.orders", "42703"),
        ("SELEC 1", "42601"),
        ("SELECT * FROM sales.orders WHERE", "42601"),
        ("SELECT no_such_function(1)", "42883"),
        ("SELECT * FROM sales.secrets", "42501"),
        (
            "SELECT o.id FROM sales.orders o WHERE o.id IN (SELECT id FROM sales.secrets)",
            "42501",
        ),
        ("CREATE TABLE sales.x (id int)", "25006"),
        ("INSERT INTO sales.orders (id) VALUES (1)", "25006"),
        ("DROP TABLE sales.orders", "25006"),
        ("SELECT 1/0", "22012"),
    ];
    for (sql, code) in cases {
        let e = c.simple_query(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e), code, "{sql}: {}", message(&e));
        // The extended protocol reports the same code.
        let e = c.query(sql, &[]).await.expect_err(sql);
        assert_eq!(sqlstate(&e), code, "{sql} (extended): {}", message(&e));
    }
    let e = c
        .simple_query("SELECT * FROM sales.secrets")
        .await
        .unwrap_err();
    assert!(message(&e).contains("sales.secrets"), "{}", message(&e));
    // After all those errors the session still works.
    assert_eq!(
        rows(&c, "SELECT count(*) FROM crm.accounts").await,
        vec![vec![Some("200".into())]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_grants_limit_tables() {
    let h = Harness::start().await;
    let crm = h.connect(CRM_ONLY.0, CRM_ONLY.1).await.unwrap();
    assert_eq!(
        rows(&crm, "SELECT count(*) FROM crm.accounts").await,
        vec![vec![Some("200".into())]]
    );
    for sql in [
        "SELECT * FROM sales.orders",
        "SELECT a.id FROM crm.accounts a JOIN sales.customers c ON c.id = a.customer_id",
        "EXPLAIN SELECT * FROM inventory.products",
        "WITH x AS (SELECT * FROM inventory.stock) SELECT count(*) FROM x",
    ] {
        let e = crm.simple_query(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e), "42501", "{sql}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_parameters_reach_the_origin_quoted() {
    let h = Harness::start().await;
    let c = h.analyst().await;
    let hostile = "'; DROP TABLE sales.orders; --";
    let statement = c
        .prepare("SELECT id, name FROM sales.customers WHERE name = $1 OR id = $2")
        .await
        .unwrap();
    let found = c.query(&statement, &[&hostile, &5i32]).await.unwrap();
    assert_eq!(
        found.len(),
        1,
        "only id 5 matches; the text matched nothing"
    );
    assert_eq!(found[0].get::<_, i32>(0), 5);
    // Reused with other values, as drivers do with named statements.
    for id in [7i32, 9, 11] {
        let r = c.query(&statement, &[&"nobody", &id]).await.unwrap();
        assert_eq!(r[0].get::<_, i32>(0), id);
    }
    // The table survived and the origin saw the value as one quoted literal.
    let direct = h.pg.direct("sales").await;
    let n: i64 = direct
        .query_one("SELECT count(*) FROM sales.orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3000);
    let log = h.pg.log_text();
    assert!(
        log.contains("'''; DROP TABLE sales.orders; --'"),
        "the origin log shows the value as a quoted literal"
    );

    // Typed parameters across origins.
    let rows = c
        .query(
            "SELECT a.tier, count(*) FROM crm.accounts a JOIN sales.customers c ON c.id = a.customer_id \
             WHERE c.region = $1 AND a.score >= $2 GROUP BY a.tier ORDER BY a.tier",
            &[&"north", &50i64],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn savepoints_inside_transaction_blocks() {
    let h = Harness::start().await;
    let c = h.analyst().await;
    let e = c.simple_query("SAVEPOINT a").await.unwrap_err();
    assert_eq!(sqlstate(&e), "25P01", "{e:?}");
    c.simple_query("BEGIN").await.unwrap();
    c.simple_query("SAVEPOINT a").await.unwrap();
    c.simple_query("SAVEPOINT b").await.unwrap();
    c.simple_query("ROLLBACK TO SAVEPOINT a").await.unwrap();
    // b went with the rollback to a; a is still there.
    let e = c.simple_query("RELEASE SAVEPOINT b").await.unwrap_err();
    assert_eq!(sqlstate(&e), "3B001", "{e:?}");
    c.simple_query("ROLLBACK").await.unwrap();
    c.simple_query("BEGIN").await.unwrap();
    c.simple_query("SAVEPOINT a").await.unwrap();
    c.simple_query("RELEASE SAVEPOINT a").await.unwrap();
    assert_eq!(
        rows(&c, "SELECT count(*) FROM sales.customers").await,
        vec![vec![Some("200".into())]]
    );
    c.simple_query("COMMIT").await.unwrap();
    // After an error the block resumes at a savepoint set before it.
    c.simple_query("BEGIN").await.unwrap();
    c.simple_query("SAVEPOINT a").await.unwrap();
    c.simple_query("SELECT * FROM sales.nope")
        .await
        .unwrap_err();
    let e = c.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&e), "25P02", "{e:?}");
    c.simple_query("ROLLBACK TO SAVEPOINT a").await.unwrap();
    assert_eq!(rows(&c, "SELECT 2").await, vec![vec![Some("2".into())]]);
    c.simple_query("ROLLBACK").await.unwrap();
    assert_eq!(rows(&c, "SELECT 1").await, vec![vec![Some("1".into())]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_reads_as_postgresql_for_clients_that_parse_it() {
    let h = Harness::start().await;
    let c = h.analyst().await;
    let v = rows(&c, "SELECT version()").await[0][0].clone().unwrap();
    // SQLAlchemy and pgjdbc read the server version from this prefix.
    assert!(v.starts_with("PostgreSQL 15.0 (Switchyard "), "{v}");
    assert_eq!(
        rows(&c, "SELECT to_regtype('integer'), to_regtype('hstore'), pg_get_serial_sequence('sales.orders', 'id')").await,
        vec![vec![Some("23".into()), None, None]]
    );
    // SHOW and current_setting name the same server.
    let one = |v: &str| vec![vec![Some(v.to_string())]];
    assert_eq!(
        rows(&c, "SHOW server_version").await,
        one("15.0 (Switchyard)")
    );
    assert_eq!(rows(&c, "SHOW server_version_num").await, one("150000"));
    assert_eq!(
        rows(&c, "SELECT current_setting('server_version_num')").await,
        one("150000")
    );
}

/// `current_database()` and `\l` name the database the client asked for (psql -d
/// shop), and a client's startup TimeZone (libpq's PGTZ, pgjdbc's JVM zone) is the
/// session's; an unknown one fails the connection as in PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_and_time_zone_the_client_asked_for() {
    let h = Harness::start().await;
    let (client, conn) = h
        .config(ANALYST.0, ANALYST.1)
        .dbname("shop")
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let one = |v: &str| vec![vec![Some(v.to_string())]];
    assert_eq!(
        rows(&client, "SELECT current_database()").await,
        one("shop")
    );
    assert_eq!(
        rows(&client, "SELECT datname FROM pg_database").await,
        one("shop")
    );
    // Described (extended protocol) under PostgreSQL's column name, answered with the zone.
    let show = client.prepare("SHOW TimeZone").await.unwrap();
    assert_eq!(show.columns()[0].name(), "TimeZone");
    let zone: String = client.query_one(&show, &[]).await.unwrap().get(0);
    assert_eq!(zone, "UTC");
    let port = h.port();
    let psql = move |zone: &'static str, sql: &'static str| {
        let out = std::process::Command::new("psql")
            .env("PGPASSWORD", ANALYST.1)
            .env("PGTZ", zone)
            .args([
                "-X",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
            ])
            .arg(port.to_string())
            .args(["-U", ANALYST.0, "shop", "-c", sql])
            .output()
            .expect("psql is installed");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        psql(
            "Asia/Kolkata",
            "SELECT current_setting('server_version_num') || ' ' || current_database() || ' ' || \
             (timestamptz '2024-01-01 00:00')::text || ' ' || current_setting('TimeZone')",
        )
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    // Midnight in Kolkata, read and shown in the session's zone.
    assert_eq!(out, "150000 shop 2024-01-01 00:00:00+05:30 Asia/Kolkata");
    let (ok, _, err) = tokio::task::spawn_blocking(move || psql("Mars/Olympus", "SELECT 1"))
        .await
        .unwrap();
    assert!(
        !ok && err.contains("invalid value for parameter \"TimeZone\""),
        "{err}"
    );
}
