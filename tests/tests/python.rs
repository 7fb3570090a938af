//! Python clients through Switchyard (tests/clients/python/clients.py): psycopg 3
//! (prepared statements, binary results and parameters, server-side cursors), psycopg2
//! (named-cursor streaming, SQLSTATEs), SQLAlchemy 2 (table-name inspection and ORM
//! queries), each answer compared with PostgreSQL's own.

mod common;

use common::Harness;

/// The checks the script must report, in order.
const CHECKS: &[&str] = &[
    "psycopg3 prepared statement with parameters, 7 runs",
    "psycopg3 binary results and binary parameters",
    "psycopg3 server-side cursor streams 100000 rows",
    "psycopg2 named cursor streams 100000 rows",
    "psycopg2 errors carry SQLSTATE and the session recovers",
    "SQLAlchemy inspect: table names",
    "SQLAlchemy ORM queries",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_psycopg2_and_sqlalchemy_work_unchanged() {
    let python = std::env::var("SWITCHYARD_TEST_PYTHON")
        .expect("SWITCHYARD_TEST_PYTHON is not set: run the tests through scripts/test");
    let h = Harness::start().await;
    let proxy = format!(
        "postgresql://{}:{}@127.0.0.1:{}/switchyard",
        common::ANALYST.0,
        common::ANALYST.1,
        h.port()
    );
    let reference = format!(
        "postgresql://{}:{}@{}:{}/reference",
        h.pg.user, h.pg.password, h.pg.host, h.pg.port
    );
    let script = common::tests_dir().join("clients/python/clients.py");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args(["-X", "faulthandler"])
            .arg(script)
            .arg(proxy)
            .arg(reference)
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let passed: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ok "))
        .collect();
    assert!(
        out.status.success() && passed == CHECKS,
        "{}: passed {passed:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
}
