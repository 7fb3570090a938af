//! pgjdbc (Debian's libpostgresql-jdbc-java, compiled with javac) against a governed
//! role: DatabaseMetaData lists only its tables and its columns as it reads them,
//! and rows come back filtered and masked.

use std::path::Path;
use std::process::Command;

use crate::common;
use crate::common::{Harness, NORTH_REP};

pub(crate) const JDBC_JAR: &str = "/usr/share/java/postgresql.jar";

fn run_java(port: u16, work: &Path) -> String {
    run_program("GovernedMetadata", port, NORTH_REP, work)
}

/// Compiles tests/clients/jdbc/<class>.java and runs it as `user` against `port`.
fn run_program(class: &str, port: u16, user: (&str, &str), work: &Path) -> String {
    run_program_on(class, port, user, "switchyard", work)
}

/// As [`run_program`], on `database` (the program's fourth argument).
pub(crate) fn run_program_on(
    class: &str,
    port: u16,
    user: (&str, &str),
    database: &str,
    work: &Path,
) -> String {
    let src = common::tests_dir().join(format!("clients/jdbc/{class}.java"));
    let javac = Command::new("javac")
        .args(["-cp", JDBC_JAR, "-d"])
        .arg(work)
        .arg(&src)
        .output()
        .expect("javac is installed (scripts/test needs a JDK)");
    assert!(
        javac.status.success(),
        "javac: {}",
        String::from_utf8_lossy(&javac.stderr)
    );
    let cp = format!("{}:{JDBC_JAR}", work.display());
    let out = Command::new("java")
        .args([
            "-cp",
            &cp,
            class,
            &port.to_string(),
            user.0,
            user.1,
            database,
        ])
        .output()
        .expect("java runs");
    assert!(
        out.status.success(),
        "java: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_metadata_and_rows_follow_the_roles_rules() {
    assert!(
        Path::new(JDBC_JAR).exists(),
        "{JDBC_JAR} is missing: install libpostgresql-jdbc-java (.ci/run does)"
    );
    let h = Harness::start().await;
    let port = h.port();
    let work = h.dir.path().join("java");
    std::fs::create_dir_all(&work).unwrap();
    let out = tokio::task::spawn_blocking(move || run_java(port, &work))
        .await
        .unwrap();
    let lines: Vec<&str> = out.lines().collect();
    let tables: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("table "))
        .collect();
    assert!(
        tables.contains(&"sales.customers") && tables.contains(&"sales.orders"),
        "{out}"
    );
    assert!(
        !tables.contains(&"sales.secrets"),
        "getTables lists a denied table:\n{out}"
    );
    let columns: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("column "))
        .collect();
    let names: Vec<&str> = columns
        .iter()
        .map(|c| c.split(' ').next().unwrap())
        .collect();
    assert_eq!(names, vec!["id", "name", "email", "region"], "{out}");
    assert!(
        columns
            .iter()
            .any(|c| *c == "email text" || *c == "email varchar"),
        "the hashed e-mail is text: {columns:?}"
    );
    let rows: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("row "))
        .collect();
    // Customers 4, 8 and 12 are the north ones among the first twelve.
    assert_eq!(
        rows,
        vec![
            "4|98c7f04d5a4d21c2ea97d0e356225555|north",
            "8|efa7fe1ca1e1e7649190578907d07df0|north",
            "12|32e61623adceacb75c5963952ef387f3|north"
        ],
        "{out}"
    );
    assert!(lines.contains(&"error 42501"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_prepared_statements_and_fetch_size_streaming() {
    let h = Harness::start().await;
    let port = h.port();
    let work = h.dir.path().join("java2");
    std::fs::create_dir_all(&work).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        run_program("PreparedAndStreaming", port, common::ANALYST, &work)
    })
    .await
    .unwrap();
    let runs: Vec<&str> = out.lines().filter(|l| l.starts_with("run ")).collect();
    assert_eq!(
        runs.len(),
        7,
        "one row per run, also after the switch to a server-side statement:\n{out}"
    );
    for (i, line) in runs.iter().enumerate() {
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts[1], (i + 1).to_string());
        assert_eq!(parts[2], (i + 1).to_string(), "{line}");
        assert!(
            parts.last().unwrap().ends_with('Z'),
            "timestamptz as an instant: {line}"
        );
    }
    assert!(out.contains("streamed 100000 10000100000"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_typed_parameters_java_types_and_sqlstates() {
    let h = Harness::start().await;
    let port = h.port();
    let work = h.dir.path().join("java-typed");
    std::fs::create_dir_all(&work).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        run_program("TypedParameters", port, common::ANALYST, &work)
    })
    .await
    .unwrap();
    let runs: Vec<&str> = out.lines().filter(|l| l.starts_with("run ")).collect();
    let want: Vec<String> = (1..=7)
        .map(|i| {
            format!(
                "run {i} {} {} run {i}! {}.75 2024-02-29T12:30:{i:02}Z 2024-03-{i:02} {}",
                41 + i,
                2 * (5_000_000_000i64 + i as i64),
                12 + i,
                i % 2 != 0
            )
        })
        .collect();
    assert_eq!(runs, want, "{out}");
    let typed: Vec<&str> = out.lines().filter(|l| l.starts_with("typed ")).collect();
    let want: Vec<String> = (1..=7)
        .map(|i| {
            format!("typed {i} 1 a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11 4 1 year 2 mons 3 days 04:05:06.5")
        })
        .collect();
    assert_eq!(typed, want, "{out}");
    let states: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("sqlstate "))
        .collect();
    assert_eq!(
        states,
        ["42P01", "42703", "22012", "42601", "42501"],
        "{out}"
    );
}

/// DatabaseMetaData's keys and indexes are the origin's; a role that may not read
/// customers.created_at sees no index on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_keys_and_indexes_come_from_the_origin() {
    let h = Harness::start().await;
    let port = h.port();
    let work = h.dir.path().join("java");
    std::fs::create_dir_all(&work).unwrap();
    let (analyst, north) = tokio::task::spawn_blocking(move || {
        (
            run_program("KeysAndIndexes", port, common::ANALYST, &work),
            run_program("KeysAndIndexes", port, NORTH_REP, &work),
        )
    })
    .await
    .unwrap();
    let lines: Vec<&str> = analyst.lines().collect();
    for expected in [
        "pk customers id 1 customers_pkey",
        "pk orders id 1 orders_pkey",
        "imported customers.id orders.customer_id 1 orders_customer_id_fkey customers_pkey",
        "exported customers.id orders.customer_id 1 orders_customer_id_fkey customers_pkey",
        "index customers customers_pkey false 1 id",
        "index customers customers_email_key false 1 email",
        "index customers customers_created_at_idx true 1 created_at",
        "index orders orders_pkey false 1 id",
        "index orders orders_customer_time_idx true 1 customer_id",
        "index orders orders_customer_time_idx true 2 ordered_at",
    ] {
        assert!(
            lines.contains(&expected),
            "missing `{expected}`:\n{analyst}"
        );
    }
    assert!(
        north
            .lines()
            .any(|l| l == "index customers customers_email_key false 1 email"),
        "{north}"
    );
    assert!(
        !north.contains("created_at"),
        "an index on a denied column is listed:\n{north}"
    );
}

/// getSchemas lists information_schema, getTypeInfo (pgjdbc's type cache query) runs,
/// and getColumns describes every type of kinds.all_types as PostgreSQL itself does:
/// type names, java.sql.Types codes, sizes, decimal digits and nullability.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_type_metadata_matches_postgres() {
    let h = Harness::start().await;
    let port = h.port();
    let pg = h.pg.clone();
    let work = h.dir.path().join("java");
    std::fs::create_dir_all(&work).unwrap();
    let (proxy, direct) = tokio::task::spawn_blocking(move || {
        (
            run_program("TypeMetadata", port, common::ANALYST, &work),
            run_program_on(
                "TypeMetadata",
                pg.port,
                (&pg.user, &pg.password),
                "types",
                &work,
            ),
        )
    })
    .await
    .unwrap();
    assert!(proxy.contains("typeinfo uuid 1111"), "{proxy}");
    assert!(
        proxy.contains("schema information_schema\nschema kinds\nschema pg_catalog\n"),
        "{proxy}"
    );
    assert_eq!(proxy, direct);
    assert_eq!(
        proxy.lines().filter(|l| l.starts_with("column ")).count(),
        31,
        "{proxy}"
    );
}

/// pgjdbc's `autosave=always`: a failed statement inside a transaction is rolled back
/// to pgjdbc's savepoint, and the transaction goes on and commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_autosave_recovers_a_failed_statement() {
    let h = Harness::start().await;
    let port = h.port();
    let work = h.dir.path().join("java");
    std::fs::create_dir_all(&work).unwrap();
    let out =
        tokio::task::spawn_blocking(move || run_program("Autosave", port, common::ANALYST, &work))
            .await
            .unwrap();
    let count = {
        let direct = h.pg.direct("sales").await;
        let row = direct
            .query_one("SELECT count(*) FROM sales.orders", &[])
            .await
            .unwrap();
        row.get::<_, i64>(0)
    };
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["failed 42P01", &format!("after {count}"), "committed"],
        "{out}"
    );
}
