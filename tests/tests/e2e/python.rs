//! Python clients through Switchyard (tests/clients/python/clients.py): psycopg 3
//! (prepared statements, binary results and parameters, server-side cursors), psycopg2
//! (named-cursor streaming, SQLSTATEs), SQLAlchemy 2 (schema and table names, keys,
//! indexes, nullable and defaults, ORM queries), each answer compared with PostgreSQL's own.

use crate::common;
use crate::common::Harness;

/// The checks the script must report, in order.
const CHECKS: &[&str] = &[
    "psycopg3 prepared statement with parameters, 7 runs",
    "psycopg3 binary results and binary parameters",
    "psycopg3 server-side cursor streams 100000 rows",
    "psycopg2 named cursor streams 100000 rows",
    "psycopg2 errors carry SQLSTATE and the session recovers",
    "psycopg3 nested transaction recovers from an error",
    "psycopg3 pipeline mode recovers from an error at Sync",
    "SQLAlchemy inspect: schema and table names",
    "SQLAlchemy inspect: keys, indexes, nullable and defaults",
    "SQLAlchemy ORM queries",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_psycopg2_and_sqlalchemy_work_unchanged() {
    let python = std::env::var("SWITCHYARD_TEST_PYTHON")
        .expect("SWITCHYARD_TEST_PYTHON is not set: run the tests through scripts/test");
    let h = Harness::start().await;
    let mut command = std::process::Command::new(python);
    command
        .args(["-X", "faulthandler"])
        .arg(common::tests_dir().join("clients/python/clients.py"));
    common::run_client_checks(&h, command, CHECKS).await;
}

/// Every type of kinds.all_types through psycopg 3 (tests/clients/python/all_types.py):
/// the same type oids and values as PostgreSQL in text and binary format, and each
/// scalar value bound back as a binary parameter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_reads_and_binds_as_postgresql_sends_it() {
    let python = std::env::var("SWITCHYARD_TEST_PYTHON")
        .expect("SWITCHYARD_TEST_PYTHON is not set: run the tests through scripts/test");
    let h = Harness::start().await;
    let mut command = std::process::Command::new(python);
    command.arg(common::tests_dir().join("clients/python/all_types.py"));
    common::run_client_checks(
        &h,
        command,
        &[
            "every type in text format, as PostgreSQL sends it",
            "every type in binary format, as PostgreSQL sends it",
            "every scalar type as a binary parameter",
            "arrays as parameters, empty ones included",
            "unaliased columns are named as PostgreSQL names them",
            "MongoDB sub-documents are jsonb",
        ],
    )
    .await;
}
