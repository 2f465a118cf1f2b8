//! Suspension suspends: a suspended agency's users cannot log in, refresh or use the tokens
//! they hold, its service accounts get no token, its devices' messages go to the DLQ; and
//! reactivation gives all of it back.

use std::time::Duration;

use eriop_tests::app::NatsUrlForTests;
use eriop_tests::mosquitto::Broker;
use eriop_tests::{wait, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

use crate::devices::light;

const PASSWORD: &str = "correct horse battery staple";

async fn samples(app: &TestApp) -> i64 {
    app.db
        .count("SELECT count(*) FROM telemetry WHERE attribute = 'activePower'")
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_suspended_agency_is_suspended_everywhere_until_reactivated() {
    let broker = Broker::start_tls();
    let app = crate::device_trust::app_with(&broker, |s| s.bridge_registry_cache_secs = 1).await;
    let agency = app.created_agency("Ville B").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let user = app
        .create_user("admin@b.example", PASSWORD, &["viewer"])
        .await;
    let granted = app
        .request(Method::PUT, &format!("/users/{user}/memberships/{agency}"))
        .json(&json!({ "roles": ["agency-admin"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(granted.status(), 204);
    // Tokens in agency B (access and refresh), as its administrator gets them.
    let switch = || async {
        let home = app.access_token("admin@b.example", PASSWORD).await;
        app.http
            .post(app.api("/auth/switch-agency"))
            .bearer_auth(&home)
            .json(&json!({ "agency_id": agency }))
            .send()
            .await
            .unwrap()
    };
    let tokens: Value = switch().await.json().await.unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let as_b =
        |method: Method, path: &str| app.http.request(method, app.api(path)).bearer_auth(&access);
    let class: Value = as_b(Method::POST, "/device-classes")
        .json(&json!({"name": "Light", "functions": [{"id": "lampMonitor001", "type": "LampMonitorFunction"}]}))
        .send().await.unwrap().json().await.unwrap();
    app.assign_registry("reg-b", &agency).await;
    let device = as_b(Method::POST, "/devices")
        .json(&json!({"class_id": class["id"], "registry": "reg-b", "serial": "SN-1", "name": "Pole"}))
        .send().await.unwrap();
    assert_eq!(device.status(), 201);
    let account: Value = as_b(Method::POST, "/service-accounts")
        .json(&json!({ "name": "SCADA", "roles": ["viewer"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let client_credentials = || async {
        app.http
            .post(app.api("/auth/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", account["client_id"].as_str().unwrap()),
                ("client_secret", account["client_secret"].as_str().unwrap()),
            ])
            .send()
            .await
            .unwrap()
    };
    assert_eq!(client_credentials().await.status(), 200);
    let lamp = light(&app, "reg-b", "SN-1", false).await;
    let now = chrono::Utc::now().timestamp_millis();
    lamp.states(now, json!({"lampMonitor001.activePower": 1.0}))
        .await
        .unwrap();
    wait::until("the first sample", Duration::from_secs(30), || async {
        (samples(&app).await == 1).then_some(())
    })
    .await;

    let suspend = app
        .patch_agency(&agency, json!({ "status": "suspended" }))
        .await;
    assert_eq!(suspend.status(), 200);
    assert_eq!(
        as_b(Method::GET, "/devices").send().await.unwrap().status(),
        401
    );
    assert_eq!(app.get_as(&access, "/auth/me").await.status(), 401);
    let refreshed = app.refresh(&refresh).await;
    assert_eq!(refreshed.status(), 400);
    let error: Value = refreshed.json().await.unwrap();
    assert_eq!(error["error"], "invalid_grant");
    assert_eq!(
        switch().await.status(),
        403,
        "no new session in a suspended agency"
    );
    assert_eq!(client_credentials().await.status(), 401);
    // The device goes on sending; its messages are kept in the DLQ, not stored.
    let mut n = 1;
    let app_ref = &app;
    wait::until(
        "a message refused for suspension",
        Duration::from_secs(30),
        || {
            n += 1;
            let (lamp, n, app) = (&lamp, n, app_ref);
            async move {
                lamp.states(now + n, json!({"lampMonitor001.activePower": n as f64}))
                    .await
                    .unwrap();
                app.dead_letter_reasons()
                    .await
                    .iter()
                    .any(|r| r.starts_with("agency suspended"))
                    .then_some(())
            }
        },
    )
    .await;
    // The user's home agency is not suspended: its own session there goes on.
    let home = app.access_token("admin@b.example", PASSWORD).await;
    assert_eq!(app.get_as(&home, "/auth/me").await.status(), 200);

    let reactivate = app
        .patch_agency(&agency, json!({ "status": "active" }))
        .await;
    assert_eq!(reactivate.status(), 200);
    let tokens: Value = switch().await.json().await.unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    assert_eq!(app.get_as(&access, "/devices").await.status(), 200);
    assert_eq!(client_credentials().await.status(), 200);
    let before = samples(&app).await;
    wait::until("samples stored again", Duration::from_secs(30), || {
        n += 1;
        let (lamp, n, app) = (&lamp, n, app_ref);
        async move {
            lamp.states(now + n, json!({"lampMonitor001.activePower": n as f64}))
                .await
                .unwrap();
            (samples(app).await > before).then_some(())
        }
    })
    .await;
}

/// Found by schemathesis: a platform administrator could suspend the agency of their own
/// session (the platform agency), which refused every platform administrator's token from
/// then on, with nobody left to reactivate it.
#[tokio::test]
async fn nobody_suspends_the_agency_of_their_own_session() {
    let app = TestApp::spawn().await;
    let own = app.admin_agency.clone();
    let refused = app
        .patch_agency(&own, json!({ "status": "suspended" }))
        .await;
    assert_eq!(refused.status(), 409);
    let problem: Value = refused.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("switch"));
    let suspended_events = app
        .db
        .count("SELECT count(*) FROM events WHERE event_type = 'AgencySuspended'")
        .await;
    assert_eq!(suspended_events, 0);
    let me = app.request(Method::GET, "/auth/me").send().await.unwrap();
    assert_eq!(me.status(), 200);
    // Another agency can be suspended from here.
    let other = app.created_agency("Ville C").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let suspended = app
        .patch_agency(&other, json!({ "status": "suspended" }))
        .await;
    assert_eq!(suspended.status(), 200, "{:?}", suspended.text().await);
}

/// The gateway keeps a caller's standing (suspension, roles) between requests, and forgets it
/// when a projection's hint says the user or the agency changed (issue 13). Here the read
/// model changes behind the projections' back, so no hint comes: the kept standing goes on
/// being used, and a hint alone (the bound is ten minutes) ends it.
#[tokio::test]
async fn a_kept_standing_ends_with_the_hint_of_a_change() {
    let app = TestApp::spawn_with(eriop_tests::TestDb::migrated().await, |s| {
        s.standing_cache_ms = 600_000;
    })
    .await;
    let (agency, token) = app.admin_of_new_agency("Ville K", "k@k.example").await;
    let set_status = |status: &'static str| {
        let agency = agency.clone();
        let pool = app.db.pool.clone();
        async move {
            sqlx::query("UPDATE agencies SET status = $1 WHERE id = $2::uuid")
                .bind(status)
                .bind(agency)
                .execute(&pool)
                .await
                .unwrap();
        }
    };
    let nats = async_nats::connect(app.settings.nats_url_for_tests())
        .await
        .unwrap();
    // The agency's hint, as its projection publishes it after a commit.
    let hint = || async {
        nats.publish(
            app.topology.projected_subject("agency", &agency),
            "7".into(),
        )
        .await
        .unwrap();
    };
    // Kept once the gateway follows the hints: a request reads the active agency, the
    // suspension is written without a hint, and the next request is still answered. (A
    // request made as the gateway began to follow may have kept the suspension: a hint
    // clears it for the next round.)
    wait::until("the standing kept", Duration::from_secs(10), || async {
        set_status("active").await;
        if app.get_as(&token, "/devices").await.status() != 200 {
            hint().await;
            return None;
        }
        set_status("suspended").await;
        (app.get_as(&token, "/devices").await.status() == 200).then_some(())
    })
    .await;
    // The hint alone ends it: the bound is ten minutes.
    hint().await;
    let refused = wait::until(
        "the suspension applied",
        Duration::from_secs(10),
        || async {
            let answer = app.get_as(&token, "/devices").await;
            (answer.status() == 401).then_some(answer)
        },
    )
    .await;
    let problem: Value = refused.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("suspended"));
}
