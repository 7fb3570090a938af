//! What a governed role sees, through the clients people use: psql's listings and
//! `\d`, information_schema, and the data itself (row filter and mask applied).

mod common;

use std::process::Command;

use common::{rows, Harness, CRM_ONLY, NORTH_REP};

fn psql(port: u16, user: (&str, &str), args: &[&str]) -> String {
    let out = Command::new("psql")
        .env("PGPASSWORD", user.1)
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            user.0,
            "switchyard",
        ])
        .args(args)
        .output()
        .expect("psql is installed");
    assert!(
        out.status.success(),
        "psql {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into()
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
