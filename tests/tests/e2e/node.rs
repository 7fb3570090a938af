//! node-postgres through Switchyard (tests/clients/node/clients.js): parameters,
//! named statements reused, pg-cursor reading through the portal row limit, and
//! SQLSTATEs — answers compared with PostgreSQL's own.

use crate::common;
use crate::common::Harness;

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
    let mut command = std::process::Command::new("node");
    command
        .env("NODE_PATH", modules)
        .arg(common::tests_dir().join("clients/node/clients.js"));
    common::run_client_checks(&h, command, CHECKS).await;
}
