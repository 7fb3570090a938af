//! psql, the client users reach for first: meta-commands, a cross-origin join and
//! its EXPLAIN.

use crate::common;
use crate::common::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_commands_list_and_describe_datasets() {
    let h = Harness::start().await;
    let (ok, out, err) = tokio::task::spawn_blocking({
        let port = h.port();
        move || {
            common::psql(
                port,
                common::ANALYST,
                &[
                    "-c",
                    "\\dt sales.*",
                    "-c",
                    "\\d inventory.products",
                    "-c",
                    "\\dn",
                ],
            )
        }
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    for table in ["customers", "orders"] {
        assert!(out.contains(table), "\\dt lists {table}:\n{out}");
    }
    for column in ["sku", "price", "numeric", "category"] {
        assert!(out.contains(column), "\\d shows {column}:\n{out}");
    }
    assert!(
        out.contains("inventory") && out.contains("crm"),
        "\\dn lists schemas:\n{out}"
    );
}

/// `\d` shows what the PostgreSQL origin declares: NOT NULL, defaults, the primary
/// key and other indexes, foreign keys; a role that may not read a column sees no
/// index on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_shows_the_origins_keys_indexes_and_defaults() {
    let h = Harness::start().await;
    let port = h.port();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        common::psql(port, common::ANALYST, &["-c", "\\d sales.orders"])
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    for expected in [
        "not null",
        "'new'::text",
        "Indexes:",
        "\"orders_pkey\" PRIMARY KEY, btree (id)",
        "\"orders_customer_time_idx\" btree (customer_id, ordered_at)",
        "Foreign-key constraints:",
        "\"orders_customer_id_fkey\" FOREIGN KEY (customer_id) REFERENCES sales.customers(id)",
    ] {
        assert!(
            out.contains(expected),
            "\\d sales.orders shows {expected}:\n{out}"
        );
    }
    let status = out
        .lines()
        .find(|l| l.trim_start().starts_with("status"))
        .unwrap_or_default();
    assert!(status.contains("not null"), "status is NOT NULL:\n{out}");
    let amount = out
        .lines()
        .find(|l| l.trim_start().starts_with("amount"))
        .unwrap_or_default();
    assert!(!amount.contains("not null"), "amount is nullable:\n{out}");

    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        common::psql(port, common::NORTH_REP, &["-c", "\\d sales.customers"])
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert!(
        out.contains("\"customers_pkey\" PRIMARY KEY, btree (id)")
            && out.contains("\"customers_email_key\" UNIQUE CONSTRAINT, btree (email)"),
        "keys on visible columns are shown:\n{out}"
    );
    assert!(
        !out.contains("created_at"),
        "nothing names the denied column:\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_join_and_its_explain() {
    let h = Harness::start().await;
    let port = h.port();
    let join = "SELECT c.name, p.name AS product, a.tier FROM sales.orders o \
                JOIN sales.customers c ON c.id = o.customer_id \
                JOIN inventory.products p ON p.id = o.product_id \
                JOIN crm.accounts a ON a.customer_id = c.id \
                WHERE o.id = 42 AND p.price > 1";
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        common::psql(
            port,
            common::ANALYST,
            &["-A", "-t", "-c", join, "-c", &format!("EXPLAIN {join}")],
        )
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert!(
        out.lines().next().unwrap_or("").starts_with("customer "),
        "{out}"
    );
    let remote: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("VirtualExecutionPlan"))
        .collect();
    assert!(remote.len() >= 3, "{out}");
    assert!(
        remote
            .iter()
            .any(|l| l.contains("\"orders\"") && l.contains("WHERE") && l.contains("42")),
        "{out}"
    );
    assert!(
        remote
            .iter()
            .any(|l| l.contains("\"products\"") && l.contains("WHERE")),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_reach_psql_with_their_sqlstate() {
    let h = Harness::start().await;
    let port = h.port();
    let (ok, _out, err) = tokio::task::spawn_blocking(move || {
        common::psql(
            port,
            common::ANALYST,
            &[
                "-v",
                "VERBOSITY=verbose",
                "-c",
                "\\set VERBOSITY verbose",
                "-c",
                "SELECT * FROM sales.nope",
            ],
        )
    })
    .await
    .unwrap();
    assert!(!ok);
    assert!(err.contains("42P01"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everyday_meta_commands_work() {
    let h = Harness::start().await;
    let port = h.port();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        common::psql(
            port,
            common::ANALYST,
            &[
                "-c",
                "\\l",
                "-c",
                "\\dn",
                "-c",
                "\\conninfo",
                "-c",
                "\\x on",
                "-c",
                "SELECT id, name FROM sales.customers WHERE id = 3",
                "-c",
                "\\timing on",
                "-c",
                "SELECT count(*) AS n FROM sales.orders",
            ],
        )
    })
    .await
    .unwrap();
    assert!(ok, "{err}\n{out}");
    assert!(out.contains("switchyard"), "\\l lists the database:\n{out}");
    assert!(
        out.contains("sales") && out.contains("inventory"),
        "\\dn:\n{out}"
    );
    assert!(
        out.contains("You are connected to database \"switchyard\""),
        "\\conninfo:\n{out}"
    );
    assert!(
        out.contains("-[ RECORD 1 ]") && out.contains("customer 3"),
        "\\x:\n{out}"
    );
    assert!(out.contains("Time: "), "\\timing:\n{out}");
    assert!(out.contains("3000"), "{out}");
}

/// `\d` prints exactly what PostgreSQL prints for the same table: column types with
/// their modifiers, NOT NULL, defaults, indexes, foreign keys and "Referenced by".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_matches_postgres_itself() {
    let h = Harness::start().await;
    let port = h.port();
    let pg = h.pg.clone();
    tokio::task::spawn_blocking(move || {
        for (database, table) in [
            ("sales", "sales.customers"),
            ("sales", "sales.orders"),
            ("inventory", "inventory.stock"),
            ("types", "kinds.all_types"),
        ] {
            let describe = format!("\\d {table}");
            let (ok, proxy, err) = common::psql(port, common::ANALYST, &["-c", &describe]);
            assert!(ok, "{err}");
            let direct = std::process::Command::new("psql")
                .args([
                    "-X",
                    "-h",
                    &pg.host,
                    "-p",
                    &pg.port.to_string(),
                    "-U",
                    &pg.user,
                ])
                .args(["-d", database, "-c", &describe])
                .env("PGPASSWORD", &pg.password)
                .output()
                .expect("psql runs");
            assert!(direct.status.success());
            assert_eq!(proxy, String::from_utf8_lossy(&direct.stdout), "{describe}");
        }
    })
    .await
    .unwrap();
}
