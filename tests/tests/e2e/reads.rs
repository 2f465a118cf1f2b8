//! Pipelined reads (issue 13: a read in one round trip): still a read of one agency, in a
//! read-only transaction that ends with the read, whatever happens to it.

use std::time::Duration;

use eriop_nats::db::pipelined::{Reads, Statement};
use eriop_nats::db::Scope;
use uuid::Uuid;

const SETTINGS: &str = "SELECT coalesce(current_setting('eriop.agency_id', true), '') AS agency,
        coalesce(current_setting('eriop.all_agencies', true), '') AS all_agencies,
        current_setting('transaction_read_only') AS read_only,
        current_user::text AS who";

/// (agency, all agencies, read only, role) as the read's transaction saw them.
async fn settings(reads: &Reads, scope: Scope) -> (String, String, String, String) {
    let rows = reads
        .read(
            scope,
            &[Statement {
                sql: SETTINGS,
                params: &[],
            }],
        )
        .await
        .unwrap();
    let row = &rows[0][0];
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

#[tokio::test]
async fn a_pipelined_read_acts_for_its_agency_only_and_leaves_nothing_behind() {
    let db = eriop_tests::TestDb::migrated().await;
    let url = format!("{}?application_name=eriop-reads-test", db.url);
    // One connection: every read below runs on the connection the read before it used.
    let reads = Reads::new(&url, "eriop_app", 1, Duration::from_secs(10)).unwrap();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());

    assert_eq!(
        settings(&reads, Scope::Agency(a)).await,
        (
            a.to_string(),
            String::new(),
            "on".into(),
            "eriop_app".into()
        )
    );

    // A statement PostgreSQL refuses: its SQLSTATE, and the connection goes on.
    let refused = reads
        .read(
            Scope::Agency(a),
            &[Statement {
                sql: "SELECT 1 / (SELECT count(*) FROM pg_class WHERE false)",
                params: &[],
            }],
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("22012"), "{refused}");
    // A read writes nothing.
    let write = reads
        .read(
            Scope::Agency(a),
            &[Statement {
                sql: "CREATE TEMP TABLE written (x int)",
                params: &[],
            }],
        )
        .await
        .unwrap_err();
    assert_eq!(write.code(), Some("25006"), "{write}");

    // A read given up half-way (its caller went away): the transaction still ends, and the
    // next read on the connection acts for its own agency only.
    let abandoned = tokio::time::timeout(
        Duration::from_millis(50),
        reads.read(
            Scope::Agency(a),
            &[Statement {
                sql: "SELECT pg_sleep(0.5)",
                params: &[],
            }],
        ),
    )
    .await;
    assert!(abandoned.is_err(), "the read was given up");
    assert_eq!(
        settings(&reads, Scope::Agency(b)).await,
        (
            b.to_string(),
            String::new(),
            "on".into(),
            "eriop_app".into()
        )
    );
    assert_eq!(
        settings(&reads, Scope::All).await,
        (String::new(), "on".into(), "on".into(), "eriop_app".into())
    );

    // Between reads the connection holds no transaction.
    let state: String = sqlx::query_scalar(
        "SELECT state FROM pg_stat_activity WHERE application_name = 'eriop-reads-test'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(state, "idle");
}

#[test]
fn a_url_that_requires_tls_gets_no_pipelined_reads() {
    let plain = "postgres://postgres@127.0.0.1:5432/eriop";
    assert!(Reads::new(plain, "", 1, Duration::from_secs(1)).is_ok());
    for url in [
        "postgres://postgres@127.0.0.1:5432/eriop?sslmode=require",
        "postgres://postgres@127.0.0.1:5432/eriop?sslmode=verify-full",
    ] {
        assert!(
            Reads::new(url, "", 1, Duration::from_secs(1)).is_err(),
            "{url}"
        );
    }
}
