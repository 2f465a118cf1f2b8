//! The event store as an audit trail: listed per agency, and verifiable.

use eriop_tests::TestApp;
use reqwest::Method;
use serde_json::{json, Value};

async fn verify(app: &TestApp, token: &str, aggregate_type: &str, id: &str) -> reqwest::Response {
    app.http
        .get(app.api("/audit/verify"))
        .query(&[("aggregate_type", aggregate_type), ("aggregate_id", id)])
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_altered_event_breaks_the_chain_and_auditors_see_where() {
    let app = TestApp::spawn().await;
    let agency = app.created_agency("Laval").await;
    let id = agency["id"].as_str().unwrap().to_owned();
    for name in ["Laval 2", "Laval 3", "Laval 4"] {
        assert_eq!(
            app.patch_agency(&id, json!({ "name": name }))
                .await
                .status(),
            200
        );
    }
    let report: Value = verify(&app, &app.token, "agency", &id)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["verified"], true);
    assert_eq!(report["events"], 4);

    // Someone with the database's owner rights edits history behind the triggers' back.
    let mut tx = app.db.pool.begin().await.unwrap();
    sqlx::query("ALTER TABLE events DISABLE TRIGGER events_append_only")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE events SET payload = '{\"AgencyRenamed\": {\"name\": \"Forged\"}}'
          WHERE aggregate_id = $1 AND sequence = 3",
    )
    .bind(&id)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("ALTER TABLE events ENABLE TRIGGER events_append_only")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let report: Value = verify(&app, &app.token, "agency", &id)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["verified"], false);
    assert_eq!(report["first_broken_sequence"], 3);
}

#[tokio::test]
async fn the_trail_is_scoped_to_the_agency_and_needs_audit_read() {
    let app = TestApp::spawn().await;
    let other_agency = app.created_agency("Longueuil").await;
    let other = other_agency["id"].as_str().unwrap().to_owned();
    // An agency admin (audit:read) of the platform agency, and a viewer (no audit:read).
    app.create_user(
        "auditor@laval.example",
        "correct horse battery staple",
        &["agency-admin"],
    )
    .await;
    app.create_user(
        "viewer@laval.example",
        "correct horse battery staple",
        &["viewer"],
    )
    .await;
    let token = |email: &'static str| {
        let app = &app;
        async move {
            app.login(email, "correct horse battery staple").await["access_token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let auditor = token("auditor@laval.example").await;
    let viewer = token("viewer@laval.example").await;

    let page: Value = app
        .http
        .get(app.api("/audit/events?limit=1000"))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = page["items"].as_array().unwrap();
    assert!(!items.is_empty());
    let me: Value = app.get_as(&auditor, "/auth/me").await.json().await.unwrap();
    for event in items {
        assert_eq!(
            event["metadata"]["agency_id"], me["agency_id"],
            "only the caller's agency"
        );
    }
    assert!(items.iter().all(|e| e["aggregate_id"] != other.as_str()));
    // Another agency's aggregate does not exist for this auditor; the platform admin sees it.
    assert_eq!(verify(&app, &auditor, "agency", &other).await.status(), 404);
    assert_eq!(
        verify(&app, &app.token, "agency", &other).await.status(),
        200
    );
    // Without audit:read: 403.
    let denied = app
        .http
        .request(Method::GET, app.api("/audit/events"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
}
