//! Telemetry retention per agency (issue 15, item 8): set by a platform administrator (an
//! event), applied by the projections' job to that agency only.

use std::time::Duration;

use chrono::{DateTime, Utc};
use eriop_projections::retention::{BATCH, KEYS};
use eriop_projections::telemetry::store::{self, Insert};
use eriop_projections::telemetry::Row;
use eriop_tests::{wait, TestApp, TestDb};
use serde_json::{json, Value};
use uuid::Uuid;

/// Samples stored as the projector stores them (`store::rows`: the rows with their keys'
/// latest values and the rollup's marks, which the job relies on).
async fn store(app: &TestApp, rows: Vec<Row>) {
    let mut tx = eriop_projections::begin_all_agencies(&app.db.pool)
        .await
        .unwrap();
    let way = store::way_in(&mut tx).await.unwrap();
    store::rows(&mut tx, &rows, Insert::New, &way)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

fn sample(agency: &str, device: Uuid, attribute: &str, time: DateTime<Utc>) -> Row {
    Row {
        time,
        agency_id: agency.parse().unwrap(),
        device_id: device,
        function_id: "lampMonitor001".to_owned(),
        attribute: attribute.to_owned(),
        value_double: Some(1.0),
        value_text: None,
        value_json: None,
    }
}

#[tokio::test]
async fn an_agencys_telemetry_past_its_retention_is_deleted_and_no_one_elses() {
    let app = TestApp::spawn_with(TestDb::migrated().await, |settings| {
        settings.telemetry_retention_interval_secs = 1;
    })
    .await;
    let kept = app.created_agency("Rouyn-Noranda").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = app.created_agency("Val-d'Or").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let days_ago = |days: i64| Utc::now() - chrono::Duration::days(days);
    let light = Uuid::now_v7();
    store(
        &app,
        vec![
            sample(&kept, light, "activePower", days_ago(40)),
            sample(&kept, light, "lampVoltage", days_ago(40)),
            sample(&kept, light, "activePower", days_ago(1)),
            sample(&other, Uuid::now_v7(), "activePower", days_ago(40)),
        ],
    )
    .await;
    let count = |agency: &str, older_than_days: i32| {
        format!(
            "SELECT count(*) FROM telemetry WHERE agency_id = '{agency}' AND time < now() - make_interval(days => {older_than_days})"
        )
    };

    let patched = app
        .patch_agency(&kept, json!({ "telemetry_retention_days": 30 }))
        .await;
    assert_eq!(patched.status(), 200);
    let request_id = patched.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = patched.json().await.unwrap();
    assert_eq!(body["telemetry_retention_days"], 30);
    // The change is an event, by the administrator, through that request.
    let metadata: Value = sqlx::query_scalar(
        "SELECT metadata FROM events WHERE aggregate_id = $1 AND event_type = 'AgencyTelemetryRetentionSet'",
    )
    .bind(&kept)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(metadata["actor"], app.admin_id.as_str());
    assert_eq!(metadata["request_id"], request_id.as_str());

    wait::until_eq(
        "the job deletes the old samples",
        Duration::from_secs(15),
        0,
        || {
            let (app, sql) = (&app, count(&kept, 30));
            async move { app.db.count(&sql).await }
        },
    )
    .await;
    assert_eq!(
        app.db.count(&count(&kept, -1)).await,
        1,
        "the recent sample is kept"
    );
    assert_eq!(
        app.db.count(&count(&other, 30)).await,
        1,
        "another agency's samples are kept"
    );

    // Out of range, or not a whole number of days: 422, nothing recorded.
    for bad in [json!(0), json!(3651), json!(1.5), json!("30")] {
        let response = app
            .patch_agency(&kept, json!({ "telemetry_retention_days": bad }))
            .await;
        assert!(
            matches!(response.status().as_u16(), 400 | 422),
            "{bad}: {}",
            response.status()
        );
    }
    assert_eq!(
        app.db
            .count(&format!("SELECT count(*) FROM events WHERE aggregate_id = '{kept}' AND event_type = 'AgencyTelemetryRetentionSet'"))
            .await,
        1
    );
}

/// The job's rule with time as a parameter: a sample exactly at the cutoff stays.
#[tokio::test]
async fn the_retention_cutoff_is_exclusive_and_time_is_an_input() {
    let app = TestApp::spawn().await;
    let agency = app.created_agency("Amos").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.patch_agency(&agency, json!({ "telemetry_retention_days": 10 }))
            .await
            .status(),
        200
    );
    let now: chrono::DateTime<chrono::Utc> = "2026-06-11T00:00:00Z".parse().unwrap();
    // Stored as the projector stores them: each minute's mark and each key's latest value
    // with the rows, so the rollup and the job find them.
    let rows = [
        "2026-06-01T00:00:00Z",
        "2026-05-31T23:59:59Z",
        "2026-06-05T00:00:00Z",
    ]
    .map(|time| sample(&agency, Uuid::now_v7(), "a", time.parse().unwrap()));
    store(&app, rows.to_vec()).await;
    assert_eq!(
        eriop_projections::telemetry::rollup::roll(&app.db.pool, now)
            .await
            .unwrap(),
        3
    );
    // One pass goes key by key, a page of keys and a batch of rows at a time: more old keys
    // than a page holds, and one key with more old samples than a batch, all in one pass.
    let long_ago: DateTime<Utc> = "2026-05-01T00:00:00Z".parse().unwrap();
    let mut old: Vec<Row> = (0..KEYS + 20)
        .map(|_| sample(&agency, Uuid::now_v7(), "a", long_ago))
        .collect();
    let busy = Uuid::now_v7();
    old.extend((0..BATCH + 5).map(|n| {
        sample(
            &agency,
            busy,
            "b",
            long_ago + chrono::Duration::milliseconds(n),
        )
    }));
    store(&app, old).await;
    let purged = eriop_projections::retention::purge(&app.db.pool, &app.db.pool, now)
        .await
        .unwrap();
    assert_eq!(purged.len(), 1);
    assert_eq!(
        purged[0].1,
        1 + (KEYS + 20) as u64 + (BATCH + 5) as u64,
        "every sample before the cutoff, and only those"
    );
    let rolled_up = app
        .db
        .count(&format!(
            "SELECT sum(samples)::bigint FROM telemetry_minutes WHERE agency_id = '{agency}'"
        ))
        .await;
    assert_eq!(
        rolled_up, 2,
        "the rollup keeps the minutes of the samples kept"
    );
    let left = app
        .db
        .count(&format!(
            "SELECT count(*) FROM telemetry WHERE agency_id = '{agency}'"
        ))
        .await;
    assert_eq!(left, 2);
}
