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
