//! node-postgres through Switchyard (tests/clients/node/clients.js): parameters,
//! named statements reused, pg-cursor reading through the portal row limit, and
//! SQLSTATEs — answers compared with PostgreSQL's own.

mod common;

use common::Harness;

const CHECKS: &[&str] = &[
    "parameters",
    "named statements reused",
    "pg-cursor streams 50000 rows in batches of 1000",
    "errors carry SQLSTATE",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_and_pg_cursor_work_unchanged() {
    let modules = std::env::var("SWITCHYARD_TEST_NODE_MODULES")
        .expect("SWITCHYARD_TEST_NODE_MODULES is not set: run the tests through scripts/test");
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
    let script = common::tests_dir().join("clients/node/clients.js");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .env("NODE_PATH", modules)
            .arg(script)
            .arg(proxy)
            .arg(reference)
            .output()
            .expect("node runs")
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
