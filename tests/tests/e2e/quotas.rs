//! Per-agency quotas (issue 14): a platform administrator sets an agency's device quota; past
//! it a registration answers 429 naming the quota, a bulk file registers what fits, and a
//! decommissioned device frees its place. An agency's own administrator cannot raise it.

use eriop_tests::TestApp;
use reqwest::Method;
use serde_json::{json, Value};

use crate::devices::{create_class, register};

async fn register_raw(app: &TestApp, class: &str, serial: &str) -> reqwest::Response {
    app.request(Method::POST, "/devices")
        .json(&json!({"class_id": class, "registry": "reg-quota", "serial": serial, "name": format!("Pole {serial}")}))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agency_over_its_device_quota_gets_429_naming_the_quota() {
    let app = TestApp::spawn().await;
    let agency = app.admin_agency.clone();
    let set = app.patch_agency(&agency, json!({"device_quota": 2})).await;
    assert_eq!(set.status(), 200, "{:?}", set.text().await);
    assert_eq!(app.agency(&agency).await["device_quota"], 2);
    let class = create_class(&app, 600).await;
    let first = register(&app, &class, "reg-quota", "SN-1").await;
    register(&app, &class, "reg-quota", "SN-2").await;

    let third = register_raw(&app, &class, "SN-3").await;
    assert_eq!(third.status(), 429);
    assert!(third.headers().contains_key("retry-after"));
    let problem: Value = third.json().await.unwrap();
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("device quota of 2"), "{detail}");

    // A bulk file: nothing fits, each row says why; the identities stay free.
    let bulk = app
        .request(Method::POST, "/devices/bulk")
        .json(&json!([
            {"class_id": class, "registry": "reg-quota", "serial": "SN-4", "name": "Pole 4"},
            {"class_id": class, "registry": "reg-quota", "serial": "SN-5", "name": "Pole 5"},
        ]))
        .send()
        .await
        .unwrap();
    let report: Value = bulk.json().await.unwrap();
    assert_eq!(report["registered"], 0, "{report}");
    assert_eq!(report["failed"], 2, "{report}");
    assert!(report.to_string().contains("device quota"), "{report}");

    // Decommissioning frees a place.
    let gone = app
        .request(Method::DELETE, &format!("/devices/{first}"))
        .send()
        .await
        .unwrap();
    assert!(gone.status().is_success(), "{:?}", gone.status());
    assert_eq!(register_raw(&app, &class, "SN-3").await.status(), 201);

    // The quota is audited like every change.
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = 'AgencyDeviceQuotaSet'",
    )
    .bind(&agency)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(events, 1);

    // An agency's own administrator cannot change quotas (agencies:manage is the platform's).
    let (other, token) = app
        .admin_of_new_agency("Quota-bound", "quota.admin@eriop.test")
        .await;
    let raised = app
        .http
        .patch(app.api(&format!("/agencies/{other}")))
        .bearer_auth(&token)
        .json(&json!({"device_quota": 1000000}))
        .send()
        .await
        .unwrap();
    assert_eq!(raised.status(), 403);
    let refused = app
        .patch_agency(&other, json!({"device_quota": 20_000_000}))
        .await;
    assert_eq!(refused.status(), 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agency_over_its_command_quota_gets_429_and_the_refused_command_is_not_recorded() {
    let app = TestApp::spawn().await;
    let agency = app.admin_agency.clone();
    let set = app
        .patch_agency(&agency, json!({"command_quota": 2, "telemetry_quota": 50}))
        .await;
    assert_eq!(set.status(), 200, "{:?}", set.text().await);
    let shown = app.agency(&agency).await;
    assert_eq!(
        (
            shown["command_quota"].clone(),
            shown["telemetry_quota"].clone()
        ),
        (json!(2), json!(50))
    );
    let class = create_class(&app, 600).await;
    let device = register(&app, &class, "reg-quota", "SN-C1").await;
    let send = || async {
        app.request(Method::POST, &format!("/devices/{device}/commands"))
            .json(&json!({"type": "fundamentum", "name": "reboot"}))
            .send()
            .await
            .unwrap()
    };
    assert_eq!(send().await.status(), 202);
    assert_eq!(send().await.status(), 202);
    let third = send().await;
    assert_eq!(third.status(), 429);
    assert!(third.headers().contains_key("retry-after"));
    assert!(third.headers()["ratelimit-policy"]
        .to_str()
        .unwrap()
        .contains("q=2"));
    let problem: Value = third.json().await.unwrap();
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("2 device commands a minute") && detail.contains("command_quota"),
        "{detail}"
    );
    let recorded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = 'CommandIssued'",
    )
    .bind(&device)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(recorded, 2, "the refused command is not in the store");

    // Out of range: refused with the field named.
    let zero = app.patch_agency(&agency, json!({"command_quota": 0})).await;
    assert_eq!(zero.status(), 422);
}

/// The telemetry quota through a real bridge: past an agency's messages a second, the excess
/// goes to the DLQ with a reason naming the quota; nothing is dropped silently (every message
/// is stored or dead-lettered).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agency_over_its_telemetry_quota_has_the_excess_dead_lettered_with_the_reason() {
    use std::time::Duration;

    use eriop_nats::dlq;
    use eriop_tests::mosquitto::Broker;
    use eriop_tests::wait;

    let broker = Broker::start_tls();
    let app = crate::device_trust::app_with(&broker, |_| {}).await;
    // One message a second for the platform's own agency, before its devices first speak
    // (the bridge reads the quota with the device's registry).
    let agency = app.admin_agency.clone();
    assert_eq!(
        app.patch_agency(&agency, json!({ "telemetry_quota": 1 }))
            .await
            .status(),
        200
    );
    let class = create_class(&app, 600).await;
    register(&app, &class, "reg-flood", "F-1").await;
    let device = crate::devices::light(&app, "reg-flood", "F-1", false).await;
    wait::until("the bridge to connect", Duration::from_secs(20), || async {
        app.bridge.is_up().then_some(())
    })
    .await;
    let sent = 20;
    let now = chrono::Utc::now().timestamp_millis();
    for n in 0..sent {
        device
            .states(now + n, json!({ "lampMonitor001.activePower": n as f64 }))
            .await
            .unwrap();
    }
    async fn refused(app: &TestApp) -> i64 {
        app.dead_letters()
            .await
            .into_iter()
            .filter_map(|(h, _)| h.get(dlq::REASON).map(|v| v.to_string()))
            .filter(|r| r.starts_with("quota:"))
            .count() as i64
    }
    // Every message is accounted for: stored, or dead-lettered for the quota.
    wait::until_eq(
        "every message stored or refused",
        Duration::from_secs(30),
        sent,
        || async { crate::devices::rows(&app).await + refused(&app).await },
    )
    .await;
    let refused = refused(&app).await;
    assert!(
        refused >= sent / 2,
        "{refused} of {sent} refused at one message a second"
    );
    let reason = app
        .dead_letters()
        .await
        .into_iter()
        .find_map(|(h, _)| h.get(dlq::REASON).map(|v| v.to_string()))
        .unwrap();
    assert!(reason.contains("telemetry_quota"), "{reason}");
    assert!(app.bridge.is_up());
}
