//! CancelRequest stops a running cross-origin statement: the client gets 57014, the
//! origin's backend is freed, and the session and others keep working.

use std::time::{Duration, Instant};

use crate::common::{self, rows, sqlstate, Harness};
use tokio_postgres::NoTls;

/// Long on purpose (~10 s here): a three-way join across two origins that DataFusion
/// must grind through. (DataFusion's nested-loop join does not yield, so its work in
/// flight finishes in the background after the cancel; the client, the session and
/// the origin are released at once, which is what this test checks.)
const LONG: &str =
    "SELECT count(*) FROM sales.orders a JOIN crm.accounts b ON a.customer_id <> b.customer_id \
                    JOIN sales.orders c ON c.id <> a.id WHERE c.id <= 800";

async fn active_origin_queries(h: &Harness) -> i64 {
    let direct = h.pg.direct("postgres").await;
    direct
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'switchyard' AND state = 'active'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_long_cross_origin_query() {
    let h = Harness::start().await;
    let c = h.analyst().await;
    let token = c.cancel_token();
    let started = Instant::now();
    let running = tokio::spawn(async move {
        let r = c.simple_query(LONG).await;
        (c, r)
    });
    // Cancel once the statement runs.
    common::wait_for("the statement to run", Duration::from_secs(10), || async {
        (h.server.engine.running_statements() > 0).then_some(())
    })
    .await;
    token
        .cancel_query(NoTls)
        .await
        .expect("cancel request sent");
    let (c, result) = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("cancel takes effect")
        .unwrap();
    let e = result.expect_err("the statement was cancelled");
    assert_eq!(sqlstate(&e), "57014", "{e:?}");
    eprintln!("cancelled after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(15));

    // No origin backend is left working for the cancelled statement.
    common::wait_for(
        "the origin to be idle after cancel",
        Duration::from_secs(10),
        || async { (active_origin_queries(&h).await == 0).then_some(()) },
    )
    .await;
    eprintln!("origin idle after {:?}", started.elapsed());
    // The session goes on.
    assert_eq!(
        rows(&c, "SELECT count(*) FROM crm.accounts").await,
        vec![vec![Some("200".into())]]
    );
    eprintln!("next statement done after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_with_a_wrong_key_does_nothing() {
    let h = Harness::start().await;
    let victim = h.analyst().await;
    let other = h.analyst().await;
    // Cancelling `other` (idle) must not touch `victim`'s statement.
    let token = other.cancel_token();
    token.cancel_query(NoTls).await.unwrap();
    assert_eq!(
        rows(&victim, "SELECT count(*) FROM sales.orders").await,
        vec![vec![Some("3000".into())]]
    );
}

/// Origin backends of Switchyard running `pg_sleep`, and how many of them use TLS.
async fn sleeping_origin_queries(h: &Harness) -> (i64, i64) {
    let direct = h.pg.direct("postgres").await;
    let row = direct
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a \
             JOIN pg_stat_ssl s USING (pid) \
             WHERE a.application_name = 'switchyard' AND a.state = 'active' AND a.query LIKE '%pg_sleep%'",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// An origin reached with `sslmode=require` gets its cancel request over TLS too: a
/// statement abandoned mid-flight stops at the origin at once, not when it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_statement_stops_at_a_tls_origin() {
    let pg = common::pg();
    let origin = format!(
        "  secure: {{ kind: postgres, url: \"postgres://{}:{}@{}:{}/inventory?sslmode=require\" }}",
        pg.user, pg.password, pg.host, pg.port
    );
    let h = Harness::start_with(
        &origin,
        "  secure.slow: { origin: secure, query: \"SELECT 1 AS slept FROM pg_sleep(60)\" }",
        |_| {},
    )
    .await;
    let c = h.analyst().await;
    let token = c.cancel_token();
    let running = tokio::spawn(async move {
        let r = c.simple_query("SELECT slept FROM secure.slow").await;
        (c, r)
    });
    let (sleeping, over_tls) = common::wait_for(
        "the origin to run the statement",
        Duration::from_secs(10),
        || async {
            let (n, tls) = sleeping_origin_queries(&h).await;
            (n > 0).then_some((n, tls))
        },
    )
    .await;
    assert_eq!((sleeping, over_tls), (1, 1), "one origin query, over TLS");
    let started = Instant::now();
    token
        .cancel_query(NoTls)
        .await
        .expect("cancel request sent");
    let (c, result) = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("cancel takes effect")
        .unwrap();
    assert_eq!(sqlstate(&result.expect_err("cancelled")), "57014");
    // Well before pg_sleep(60) would end on its own.
    common::wait_for(
        "the TLS origin to stop the abandoned statement",
        Duration::from_secs(10),
        || async { (sleeping_origin_queries(&h).await.0 == 0).then_some(()) },
    )
    .await;
    eprintln!("origin stopped {:?} after the cancel", started.elapsed());
    assert_eq!(
        rows(&c, "SELECT count(*) FROM crm.accounts").await,
        vec![vec![Some("200".into())]]
    );
}
