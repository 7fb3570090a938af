//! MongoDB origins through the proxy (SecantusDB from scripts/with-origins, database
//! `shop`): what reaches MongoDB is one aggregation pipeline per MongoDB part of a
//! statement, shown by EXPLAIN and counted by EXPLAIN ANALYZE; type errors, empty
//! collections and a dead server get their SQLSTATEs. Answers are compared with
//! PostgreSQL in tests/slt/mongo.slt.

use crate::common;
use crate::common::{explain, mongo_url, rows, sqlstate, Harness};
use mongodb::bson::doc;

/// EXPLAIN of `sql`, which must read MongoDB through exactly one pipeline; the plan and
/// that pipeline's JSON.
async fn one_pipeline(c: &tokio_postgres::Client, sql: &str) -> (String, String) {
    let plan = explain(c, sql).await;
    let p = pipelines(&plan);
    assert_eq!(p.len(), 1, "{plan}");
    let pipeline = p[0].clone();
    (plan, pipeline)
}

/// The pipeline JSON of each MongoExec line of an EXPLAIN.
fn pipelines(plan: &str) -> Vec<String> {
    plan.lines()
        .filter_map(|l| {
            l.split_once("MongoExec: ")
                .map(|(_, rest)| rest.to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_joins_postgres_with_mongodb_and_explain_shows_the_pipeline() {
    let h = Harness::start().await;
    let port = h.port();
    let join = "SELECT c.region, p.tier, count(*) AS n, sum(p.balance) AS balance \
                FROM sales.customers c JOIN shop.profiles p ON p.customer_id = c.id \
                WHERE p.tier = 'gold' AND c.region <> 'east' \
                GROUP BY c.region, p.tier ORDER BY c.region";
    let (ok, out, err) = tokio::task::spawn_blocking({
        let join = join.to_string();
        move || {
            common::psql(
                port,
                common::ANALYST,
                &[
                    "-A",
                    "-F",
                    "|",
                    "-c",
                    &join,
                    "-c",
                    &format!("EXPLAIN {join}"),
                ],
            )
        }
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    // The answer PostgreSQL gives over the same rows.
    let reference = h.pg.direct("reference").await;
    for row in rows(&reference, join).await {
        let line = row
            .into_iter()
            .map(|v| v.unwrap_or_default())
            .collect::<Vec<_>>()
            .join("|");
        assert!(out.contains(&line), "missing row {line} in\n{out}");
    }
    // The MongoDB side gets its filter and only the columns it needs; PostgreSQL its own.
    let p = pipelines(&out);
    assert_eq!(p.len(), 1, "{out}");
    assert!(
        p[0].contains(r#"{"$match":{"tier":{"$eq":"gold"}}}"#),
        "{}",
        p[0]
    );
    assert!(p[0].contains(r#""$project""#), "{}", p[0]);
    assert!(
        !p[0].contains("name"),
        "unused columns were fetched: {}",
        p[0]
    );
    assert!(
        out.contains("WHERE (\"customers\".\"region\" <> 'east')")
            || out.contains("region\" <> 'east'"),
        "{out}"
    );

    // A GROUP BY over the collection is a $group in the pipeline.
    let c = h.analyst().await;
    let (plan, p) = one_pipeline(&c, "SELECT tier, count(*), sum(balance), avg(score) FROM shop.profiles WHERE active GROUP BY tier").await;
    for stage in ["$match", "$group", "$project"] {
        assert!(p.contains(stage), "{stage} missing: {plan}");
    }
    assert!(
        !plan.contains("AggregateExec"),
        "the aggregate ran locally: {plan}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_mongodb_statements_become_one_pipeline() {
    let h = Harness::start().await;
    let c = h.analyst().await;
    // Filter, sort with SQL's NULL order (ASC puts NULLs last, MongoDB first), limit:
    // all at the origin.
    let (plan, p) = one_pipeline(
        &c,
        "SELECT _id, qty FROM shop.events WHERE kind LIKE 'view%' ORDER BY qty LIMIT 3",
    )
    .await;
    for stage in [
        r#""pattern":"^view.*$""#,
        "$addFields",
        "$sort",
        r#"{"$limit":3}"#,
    ] {
        assert!(p.contains(stage), "{stage} missing: {plan}");
    }
    assert!(!plan.contains("SortExec"), "{plan}");

    // A join of two collections of one database is a $lookup.
    let (plan, p) = one_pipeline(&c, "SELECT p.tier, count(*) FROM shop.events e JOIN shop.profiles p ON p.customer_id = e.customer_id WHERE e.qty > 2 GROUP BY p.tier").await;
    for stage in ["$lookup", "$unwind", "$group", r#""$gt":2"#] {
        assert!(p.contains(stage), "{stage} missing: {plan}");
    }
    assert!(!plan.contains("HashJoinExec"), "{plan}");

    // What cannot be translated runs here, over a pipeline that still filters.
    let (plan, p) = one_pipeline(
        &c,
        "SELECT upper(kind), count(*) FROM shop.events WHERE qty = 3 GROUP BY upper(kind)",
    )
    .await;
    assert!(p.contains(r#""qty":{"$eq":3}"#), "{plan}");
    assert!(plan.contains("AggregateExec"), "{plan}");
}

/// The documents MongoExec received, from EXPLAIN ANALYZE.
async fn documents_read(c: &tokio_postgres::Client, sql: &str) -> u64 {
    let plan = rows(c, &format!("EXPLAIN ANALYZE {sql}"))
        .await
        .into_iter()
        .map(|r| r.into_iter().flatten().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n");
    let line = plan
        .lines()
        .find(|l| l.contains("MongoExec"))
        .unwrap_or_else(|| panic!("no MongoExec in {plan}"));
    let rows = line
        .split("output_rows=")
        .nth(1)
        .unwrap_or_else(|| panic!("no output_rows in {line}"));
    rows.split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushdown_is_measured_in_documents_transferred() {
    let h = Harness::start().await;
    let c = h.analyst().await;
    // 2000 events; the aggregate returns one document per kind.
    assert_eq!(
        documents_read(
            &c,
            "SELECT kind, count(*), sum(amount) FROM shop.events GROUP BY kind"
        )
        .await,
        6
    );
    assert_eq!(
        documents_read(&c, "SELECT count(*) FROM shop.events WHERE at >= timestamptz '2024-03-20 00:00:00+00' AND qty IS NOT NULL").await,
        1
    );
    assert_eq!(
        documents_read(&c, "SELECT _id FROM shop.events ORDER BY at DESC LIMIT 4").await,
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_types_empty_collections_and_dead_servers_have_sqlstates() {
    // A collection whose documents disagree with the declared column type.
    let client = mongodb::Client::with_uri_str(mongo_url()).await.unwrap();
    let typed = client
        .database("shop_errors")
        .collection::<mongodb::bson::Document>("typed");
    typed.drop().await.unwrap();
    typed
        .insert_many([
            doc! {"_id": 1, "n": 10},
            doc! {"_id": 2, "n": "eleven"},
            doc! {"_id": 3},
        ])
        .await
        .unwrap();
    let h = Harness::start_with(
        "  errs: { kind: mongodb, url: \"${SWITCHYARD_TEST_MONGO_URL}\", database: shop_errors }\n  gone: { kind: mongodb, url: \"mongodb://127.0.0.1:9/?directConnection=true\", database: shop }",
        "  errs.typed:\n    origin: errs\n    table: typed\n    columns: [{ name: id, type: int4, path: _id }, { name: n, type: int8 }]\n  errs.nothing: { origin: errs, table: no_such_collection }\n  gone: { origin: gone, tables: [profiles] }",
        |_| {},
    )
    .await;
    let c = h.analyst().await;
    // Rows that fit are fine, the missing field is NULL.
    assert_eq!(
        rows(&c, "SELECT id, n FROM errs.typed WHERE id <> 2 ORDER BY id").await,
        vec![
            vec![Some("1".into()), Some("10".into())],
            vec![Some("3".into()), None]
        ]
    );
    let e = c
        .simple_query("SELECT id, n FROM errs.typed ORDER BY id")
        .await
        .expect_err("a string in an int8 column fails");
    assert_eq!(sqlstate(&e), "42804", "{e:?}");
    let msg = common::message(&e);
    assert!(
        msg.contains("column n") && msg.contains("expected int8, found string \"eleven\""),
        "{msg}"
    );

    let e = c
        .simple_query("SELECT * FROM errs.nothing")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42P18", "{e:?}");
    assert!(
        common::message(&e).contains("declare them with columns:"),
        "{}",
        common::message(&e)
    );

    let started = std::time::Instant::now();
    let e = c
        .simple_query("SELECT count(*) FROM gone.profiles")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "08001", "{e:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    // The session and the other origins carry on.
    assert_eq!(
        rows(&c, "SELECT count(*) FROM shop.profiles").await,
        vec![vec![Some("180".into())]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_filters_masks_and_denied_columns_apply_to_collections() {
    let h = Harness::start().await;
    let rep = h
        .connect(common::SHOP_REP.0, common::SHOP_REP.1)
        .await
        .unwrap();
    // 40 of 180 profiles are gold.
    assert_eq!(
        rows(&rep, "SELECT count(*) FROM shop.profiles").await,
        vec![vec![Some("40".into())]]
    );
    let e = rep
        .simple_query("SELECT score FROM shop.profiles")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    assert_eq!(
        rows(
            &rep,
            "SELECT name, tier FROM shop.profiles WHERE customer_id = 4"
        )
        .await,
        vec![vec![
            Some("6de8477938d95213c7215db3bd405ff7".into()),
            Some("gold".into())
        ]]
    );
    // A silver profile is not there for this role.
    assert!(
        rows(&rep, "SELECT name FROM shop.profiles WHERE customer_id = 1")
            .await
            .is_empty()
    );
    // The row filter reaches MongoDB as a $match; the mask stays here.
    let (plan, p) = one_pipeline(
        &rep,
        "SELECT name, balance FROM shop.profiles WHERE balance > 100",
    )
    .await;
    assert!(p.contains(r#""tier":{"$eq":"gold"}"#), "{plan}");
    assert!(p.contains(r#""$gt":{"$numberDecimal":"#), "{plan}");
    assert!(!p.contains("md5"), "{plan}");
    // Joined with PostgreSQL: still only gold profiles.
    let joined = rows(
        &rep,
        "SELECT count(*) FROM sales.customers c JOIN shop.profiles p ON p.customer_id = c.id",
    )
    .await;
    let reference = h.pg.direct("reference").await;
    let want = rows(
        &reference,
        "SELECT count(*) FROM sales.customers c JOIN shop.profiles p ON p.customer_id = c.id WHERE p.tier = 'gold'",
    )
    .await;
    assert_eq!(joined, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_find_and_aggregate_return_arrow_batches() {
    use switchyard_config::MongoOrigin;
    use switchyard_connectors::mongo::MongoConnector;
    let connector = MongoConnector::new(
        "docs",
        MongoOrigin {
            url: mongo_url(),
            database: "shop".into(),
            sample_size: 100,
            pushdown: true,
        },
    );
    let events = connector.collection("events").await.unwrap();
    let batches = events
        .aggregate_json(r#"[{"$match": {"kind": "buy", "qty": {"$gte": 5}}}, {"$group": {"_id": "$qty", "n": {"$sum": 1}, "total": {"$sum": "$amount"}}}, {"$sort": {"_id": 1}}]"#)
        .await
        .unwrap();
    let b = &batches[0];
    assert_eq!(b.schema().field(0).name(), "_id");
    assert_eq!(b.num_rows(), 1, "buy events have qty 6 and lower only");
    assert_eq!(
        b.schema().field_with_name("total").unwrap().data_type(),
        &arrow::datatypes::DataType::Decimal128(38, 2)
    );
    let found = events
        .find_json(r#"{"filter": {"_id": {"$lte": 3}}, "projection": {"kind": 1, "at": 1}, "sort": {"_id": -1}, "limit": 2}"#)
        .await
        .unwrap();
    let ids =
        arrow::array::AsArray::as_primitive::<arrow::datatypes::Int32Type>(found[0].column(0));
    assert_eq!(ids.values().to_vec(), vec![3, 2]);
    assert!(matches!(
        found[0].schema().field_with_name("at").unwrap().data_type(),
        arrow::datatypes::DataType::Timestamp(_, Some(_))
    ));
    let bad = events.aggregate_json("{not json").await.unwrap_err();
    assert!(bad.to_string().contains("not JSON"), "{bad}");
}
