//! Agency isolation, the second time: row-level security, through the role the services use.

use eriop_tests::TestApp;
use serde_json::Value;
use sqlx::{Connection, PgConnection};

#[tokio::test]
async fn a_query_without_its_agency_filter_still_sees_only_its_agency() {
    let app = TestApp::spawn().await;
    let me: Value = app
        .get_as(&app.token, "/auth/me")
        .await
        .json()
        .await
        .unwrap();
    let mine = me["agency_id"].as_str().unwrap().to_owned();
    let other = app.created_agency("Longueuil").await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The services' role: neither superuser nor BYPASSRLS.
    let (superuser, bypass): (bool, bool) =
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1")
            .bind(&app.settings.database_role)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert!(!superuser && !bypass);

    // The users read model is projected after the administrator logs in (a login does not
    // wait for it): the check below needs the administrator's row there.
    eriop_tests::wait::until_eq(
        "the administrator's row in the users read model",
        std::time::Duration::from_secs(30),
        1,
        || async {
            app.db
                .count(&format!(
                    "SELECT count(*) FROM users WHERE agency_id = '{mine}'::uuid"
                ))
                .await
        },
    )
    .await;
    let mut conn = PgConnection::connect(&app.db.url).await.unwrap();
    sqlx::query(&format!("SET ROLE {}", app.settings.database_role))
        .execute(&mut conn)
        .await
        .unwrap();
    let (agencies, users) = visible(&mut conn, "eriop.agency_id", mine.clone()).await;
    assert_eq!(agencies, vec![mine.clone()]);
    assert_eq!(users, vec![mine.clone()]);
    let (agencies, users) = visible(&mut conn, "eriop.agency_id", other.clone()).await;
    assert_eq!(agencies, vec![other.clone()]);
    assert!(users.is_empty());
    // Saying nothing shows nothing (fails closed).
    let (agencies, _) = visible(&mut conn, "eriop.agency_id", String::new()).await;
    assert!(agencies.is_empty());
    // Nor can a row be written into another agency.
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('eriop.agency_id', $1, true)")
        .bind(&mine)
        .execute(&mut *tx)
        .await
        .unwrap();
    let smuggled = sqlx::query("UPDATE agencies SET name = 'taken over' WHERE id = $1::uuid")
        .bind(&other)
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(smuggled.rows_affected(), 0);
    drop(tx);

    // Telemetry too: a sample of another agency can be neither written nor read.
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('eriop.agency_id', $1, true)")
        .bind(&mine)
        .execute(&mut *tx)
        .await
        .unwrap();
    let foreign = sqlx::query(
        "INSERT INTO telemetry (time, agency_id, device_id, function_id, attribute, value_double)
         VALUES (now(), $1::uuid, gen_random_uuid(), 'lamp', 'level', 1)",
    )
    .bind(&other)
    .execute(&mut *tx)
    .await;
    assert!(
        foreign.is_err(),
        "row-level security refuses another agency's sample"
    );
    drop(tx);
    sqlx::query(
        "INSERT INTO telemetry (time, agency_id, device_id, function_id, attribute, value_double)
         VALUES (now(), $1::uuid, gen_random_uuid(), 'lamp', 'level', 1)",
    )
    .bind(&other)
    .execute(&app.db.pool)
    .await
    .unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('eriop.agency_id', $1, true)")
        .bind(&mine)
        .execute(&mut *tx)
        .await
        .unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM telemetry")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(seen, 0, "another agency's telemetry is invisible");
}

/// The agencies and the agencies of users that a transaction acting as `setting = value`
/// sees, with no WHERE clause: the forgotten filter.
async fn visible(
    conn: &mut PgConnection,
    setting: &str,
    value: String,
) -> (Vec<String>, Vec<String>) {
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config($1, $2, true)")
        .bind(setting)
        .bind(value)
        .execute(&mut *tx)
        .await
        .unwrap();
    let agencies: Vec<String> = sqlx::query_scalar("SELECT id::text FROM agencies ORDER BY 1")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    let users: Vec<String> = sqlx::query_scalar("SELECT DISTINCT agency_id::text FROM users")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    (agencies, users)
}

/// Every relation the services' role can read is protected: by row-level security (enabled
/// and forced), or named below with the reason it holds no agency's data or must stay
/// readable whole. Partitions are not readable at all (their parent's policies do not apply
/// to a partition named directly), and a SECURITY DEFINER function pins its search_path.
#[tokio::test]
async fn every_relation_the_app_role_reads_is_protected() {
    let app = TestApp::spawn().await;
    let role = app.settings.database_role.clone();
    // Not agency data, or read whole by design:
    let unfiltered = [
        // the migrator's own bookkeeping
        "_sqlx_migrations",
        // the event store: aggregates load their streams from it (cqrs-es, no agency in the
        // query); audit queries filter by agency; secrets in it are hashed or sealed
        "events",
        "snapshots",
        "stored_events",
        // the relay's queue and the projections' positions: stream positions, no data
        "relay_pending",
        "projection_checkpoints",
        // platform-wide unique keys: identity reservations, registry ids, the email blind
        // index (an HMAC), wrapped per-person data keys (useless without the server key)
        "device_identities",
        // failed logins on addresses without an account, by blind index: nobody's data
        "login_failures_unknown",
        "registry_ids",
        "user_emails",
        "user_data_keys",
    ];
    let relations: Vec<(String, bool, bool, bool)> = sqlx::query_as(
        "SELECT c.relname, c.relrowsecurity AND c.relforcerowsecurity, c.relispartition,
                c.relkind IN ('v', 'm')
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
            AND has_table_privilege($1, c.oid, 'SELECT')
          ORDER BY 1",
    )
    .bind(&role)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert!(relations.len() > 10);
    for (name, forced, partition, _view) in &relations {
        assert!(!partition, "{role} can read the partition {name} directly");
        assert!(
            *forced || unfiltered.contains(&name.as_str()),
            "{name} is readable by {role} without row-level security"
        );
    }
    // Every policy reads the settings once a statement (migration 0031's form: each in a
    // scalar subquery, an initplan), not once a row: a new table whose policy copied 0012's
    // text would bring back what was about 15% of PostgreSQL's CPU on a page of devices.
    let policies: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT tablename::text, qual, with_check FROM pg_policies WHERE schemaname = 'public'",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert!(policies.len() > 10);
    for (table, using, check) in &policies {
        assert_eq!(Some(using), check.as_ref(), "{table}: reads as it writes");
        assert_eq!(
            using.matches("current_setting(").count(),
            2,
            "{table}: {using}"
        );
        assert_eq!(
            using.matches("( SELECT (").count(),
            2,
            "{table} reads its settings once a row: {using}"
        );
    }
    let partitions: i64 = app
        .db
        .count("SELECT count(*) FROM pg_inherits WHERE inhparent = 'telemetry'::regclass")
        .await;
    assert!(partitions > 1, "plain PostgreSQL: partitions exist");

    // The side door, tried: another agency's row through a partition named directly.
    let day = chrono::Utc::now().format("%Y%m%d").to_string();
    sqlx::query(
        "INSERT INTO telemetry (time, agency_id, device_id, function_id, attribute, value_double)
         VALUES (now(), gen_random_uuid(), gen_random_uuid(), 'f', 'a', 1)",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    let mut conn = PgConnection::connect(&app.db.url).await.unwrap();
    sqlx::query(&format!("SET ROLE {role}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let through_parent: i64 = sqlx::query_scalar("SELECT count(*) FROM telemetry")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(through_parent, 0, "no agency set: nothing");
    let direct = sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM telemetry_{day}"))
        .fetch_one(&mut conn)
        .await;
    assert!(direct.is_err(), "a partition read directly: {direct:?}");
    // A partition made later (by the projections, through the function) is closed too.
    let made: i32 =
        sqlx::query_scalar("SELECT eriop_ensure_telemetry_partitions(current_date + 400, 1)")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(made, 1);
    let later = (chrono::Utc::now() + chrono::Duration::days(400)).format("%Y%m%d");
    let direct = sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM telemetry_{later}"))
        .fetch_one(&mut conn)
        .await;
    assert!(direct.is_err(), "a new partition read directly: {direct:?}");

    let unpinned: Vec<String> = sqlx::query_scalar(
        "SELECT proname::text FROM pg_proc
          WHERE prosecdef AND pronamespace = 'public'::regnamespace
            AND NOT coalesce(proconfig::text LIKE '%search_path=%', false)",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert!(
        unpinned.is_empty(),
        "SECURITY DEFINER without search_path: {unpinned:?}"
    );
}
