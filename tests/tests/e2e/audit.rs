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

/// Auditors read the whole trail but no secret's hash: the password and client-secret hashes,
/// the sealed TOTP secret and the recovery codes' hashes read `[redacted]`; the stored events,
/// and so the hash chain, stay as they were.
#[tokio::test]
async fn audit_answers_hold_no_secret_hashes() {
    let app = TestApp::spawn().await;
    let password = "correct horse battery staple";
    app.create_user("auditee@laval.example", password, &["viewer"])
        .await;
    let account: Value = app
        .request(Method::POST, "/service-accounts")
        .json(&json!({ "name": "SCADA integration", "roles": ["viewer"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(account["client_secret"].is_string());
    let token = app.access_token("auditee@laval.example", password).await;
    let (_secret, codes) = app.enrol_totp(&token).await;
    assert!(!codes.is_empty());

    let stored: Vec<String> =
        sqlx::query_scalar("SELECT payload::text FROM events WHERE aggregate_type = 'user'")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    let stored = stored.join("\n");
    for secret in ["$argon2id", "MfaEnrolmentStarted", "RecoveryCodesGenerated"] {
        assert!(stored.contains(secret), "the store keeps {secret}");
    }
    let answer = app
        .request(Method::GET, "/audit/events?aggregate_type=user&limit=1000")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let items: Value = serde_json::from_str(&answer).unwrap();
    let events = items["items"].as_array().unwrap();
    assert!(events.len() >= 6, "{answer}");
    assert!(!answer.contains("$argon2"), "a hash in the audit answer");
    let field = |event_type: &str, field: &str| -> Vec<Value> {
        events
            .iter()
            .filter(|e| e["event_type"] == event_type)
            .map(|e| e["payload"][event_type][field].clone())
            .collect()
    };
    for (event_type, name) in [
        ("UserRegistered", "password_hash"),
        ("MfaEnrolmentStarted", "secret"),
        ("RecoveryCodesGenerated", "hashes"),
    ] {
        let values = field(event_type, name);
        assert!(!values.is_empty(), "{event_type}");
        assert!(
            values.iter().all(|v| v == "[redacted]"),
            "{event_type}.{name}: {values:?}"
        );
    }
    // The chain is untouched: the stored payloads are still what they were.
    let id = events
        .iter()
        .find(|e| e["event_type"] == "RecoveryCodesGenerated")
        .unwrap()["aggregate_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let report: Value = verify(&app, &app.token, "user", &id)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["verified"], true);
}
