//! Telemetry retention per agency (issue 15, item 8): set by a platform administrator (an
//! event), applied by the projections' job to that agency only.

use std::time::Duration;

use eriop_tests::{wait, TestApp, TestDb};
use serde_json::{json, Value};

async fn sample(app: &TestApp, agency: &str, days_ago: i32) {
    sqlx::query(
        "INSERT INTO telemetry (time, agency_id, device_id, function_id, attribute, value_double)
         VALUES (now() - make_interval(days => $2), $1::uuid, gen_random_uuid(), 'lampMonitor001', 'activePower', 1)",
    )
    .bind(agency)
    .bind(days_ago)
    .execute(&app.db.pool)
    .await
    .unwrap();
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
    for (agency, days_ago) in [(&kept, 40), (&kept, 40), (&kept, 1), (&other, 40)] {
        sample(&app, agency, days_ago).await;
    }
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
    for time in [
        "2026-06-01T00:00:00Z",
        "2026-05-31T23:59:59Z",
        "2026-06-05T00:00:00Z",
    ] {
        sqlx::query(
            "INSERT INTO telemetry (time, agency_id, device_id, function_id, attribute, value_double)
             VALUES ($2::timestamptz, $1::uuid, gen_random_uuid(), 'f', 'a', 1)",
        )
        .bind(&agency)
        .bind(time)
        .execute(&app.db.pool)
        .await
        .unwrap();
    }
    // Rolled up, as the projections would have: the rollup's minutes go with their samples.
    // The projector writes each minute's mark and each attribute's latest value with its
    // rows; so does this test.
    for written_with_the_rows in [
        "INSERT INTO telemetry_touched (agency_id, minute, device_ids)
         SELECT agency_id, date_bin('1 minute', time, TIMESTAMPTZ '2000-01-03'), array_agg(device_id)
           FROM telemetry WHERE agency_id = $1::uuid GROUP BY 1, 2",
        "INSERT INTO device_latest (device_id, function_id, attribute, agency_id, time, value_double)
         SELECT DISTINCT ON (device_id, function_id, attribute)
                device_id, function_id, attribute, agency_id, time, value_double
           FROM telemetry WHERE agency_id = $1::uuid
          ORDER BY device_id, function_id, attribute, time DESC",
    ] {
        sqlx::query(written_with_the_rows)
            .bind(&agency)
            .execute(&app.db.pool)
            .await
            .unwrap();
    }
    assert_eq!(
        eriop_projections::telemetry::rollup::roll(&app.db.pool, now)
            .await
            .unwrap(),
        3
    );
    let purged = eriop_projections::retention::purge(&app.db.pool, &app.db.pool, now)
        .await
        .unwrap();
    assert_eq!(purged.len(), 1);
    assert_eq!(purged[0].1, 1, "only the sample before the cutoff");
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
