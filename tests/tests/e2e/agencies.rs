//! An agency travels the whole way: HTTP command, aggregate, event store, relay, EVENTS,
//! projection, read model, HTTP query.

use std::collections::HashMap;

use eriop_tests::TestApp;
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test]
async fn create_then_get_at_once_with_audit_metadata_and_one_event_on_the_stream() {
    let app = TestApp::spawn().await;

    let response = app
        .request(Method::POST, "/agencies")
        .header("x-request-id", "req-create-laval-1")
        .json(&json!({ "name": "  Ville de Laval " }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-request-id"], "req-create-laval-1");
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/api/v1/agencies/{id}"));
    assert_eq!(created["name"], "Ville de Laval");
    assert_eq!(created["status"], "active");
    assert_eq!(created["version"], 1);

    // Read your writes: no retry, no sleep.
    assert_eq!(app.agency(&id).await, created);

    // The event is in the store with every metadata field.
    let (event_type, metadata): (String, sqlx::types::Json<HashMap<String, String>>) = sqlx::query_as(
        "SELECT event_type, metadata FROM events WHERE aggregate_type = 'agency' AND aggregate_id = $1",
    )
    .bind(&id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(event_type, "AgencyCreated");
    assert_eq!(metadata["actor"], app.admin_id);
    assert_eq!(metadata["agency_id"], id);
    assert_eq!(metadata["request_id"], "req-create-laval-1");
    assert_eq!(metadata["command"], "CreateAgency");
    assert!(chrono_like(&metadata["time"]), "{}", metadata["time"]);
    assert_eq!(metadata["previous_hash"], "");

    // ... and on EVENTS exactly once, with its dedup id and the stored envelope.
    let total = app.db.count("SELECT count(*) FROM events").await;
    app.await_stream_len(total as u64).await;
    let on_stream: Vec<_> = app
        .events_on_stream()
        .await
        .into_iter()
        .filter(|(_, e)| e.aggregate_id == id)
        .collect();
    assert_eq!(on_stream.len(), 1);
    let (msg_id, event) = &on_stream[0];
    assert_eq!(msg_id, &format!("agency:{id}:1"));
    assert_eq!(event.aggregate_id, id);
    assert_eq!(event.sequence, 1);
    assert_eq!(event.metadata["request_id"], "req-create-laval-1");
    assert_eq!(event.payload["AgencyCreated"]["name"], "Ville de Laval");
}

fn chrono_like(t: &str) -> bool {
    t.len() >= 20 && t.ends_with('Z') && t.as_bytes()[10] == b'T'
}

#[tokio::test]
async fn rename_suspend_reactivate_and_list() {
    let app = TestApp::spawn().await;
    let a = app.created_agency("Laval").await;
    let b = app.created_agency("Longueuil").await;
    let id = a["id"].as_str().unwrap();

    let patched: Value = app
        .patch_agency(
            id,
            json!({ "name": "Ville de Laval", "status": "suspended" }),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(patched["name"], "Ville de Laval");
    assert_eq!(patched["status"], "suspended");
    assert_eq!(patched["version"], 3);

    // Asking for the current state changes nothing and records nothing.
    let same = app.patch_agency(id, json!({ "status": "suspended" })).await;
    assert_eq!(same.status(), 200);
    assert_eq!(same.json::<Value>().await.unwrap()["version"], 3);

    let reactivated: Value = app
        .patch_agency(id, json!({ "status": "active" }))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(reactivated["status"], "active");
    assert_eq!(reactivated["version"], 4);

    let page: Value = app
        .request(Method::GET, "/agencies")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    // After the platform agency made by the bootstrap, oldest first.
    assert_eq!(
        names,
        [
            "Platform operations",
            "Ville de Laval",
            b["name"].as_str().unwrap()
        ]
    );

    // Each event's metadata carries the hash of the previous one: the chain is whole.
    let chain: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT sequence, encode(hash, 'hex'), metadata->>'previous_hash' FROM events
          WHERE aggregate_id = $1 ORDER BY sequence",
    )
    .bind(id)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(chain.len(), 4);
    for pair in chain.windows(2) {
        assert_eq!(
            pair[1].2, pair[0].1,
            "event {} is chained to {}",
            pair[1].0, pair[0].0
        );
    }
}

#[tokio::test]
async fn the_event_store_is_append_only() {
    let app = TestApp::spawn().await;
    let a = app.created_agency("Laval").await;
    for sql in [
        "UPDATE events SET payload = '{}'",
        "DELETE FROM events",
        "TRUNCATE events CASCADE",
    ] {
        let err = sqlx::query(sql).execute(&app.db.pool).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count(*) FROM events WHERE aggregate_id = '{}'",
                a["id"].as_str().unwrap()
            ))
            .await,
        1
    );
}

/// An agency onboarded in one step: a platform administrator creates the agency's first
/// `agency-admin` directly in it (one-time password answered once); that person works in the
/// agency at once. Another agency's administrator cannot do the same (404).
#[tokio::test]
async fn an_agency_is_onboarded_with_its_first_admin_in_one_call() {
    let app = TestApp::spawn().await;
    let agency = app.created_agency("Ville de Gatineau").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let created = app
        .request(Method::POST, "/users")
        .json(&json!({
            "email": "admin@gatineau.example", "display_name": "Gatineau Admin",
            "roles": ["agency-admin"], "agency_id": agency,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{:?}", created.text().await);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["agency_id"], agency.as_str());
    let one_time = created["one_time_password"].as_str().unwrap().to_owned();
    let first = app.login("admin@gatineau.example", &one_time).await;
    let changed: Value = app
        .http
        .post(app.api("/auth/password"))
        .bearer_auth(first["access_token"].as_str().unwrap())
        .json(&json!({ "current_password": one_time, "new_password": "gatineau runs its own lights 9" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = changed["access_token"].as_str().unwrap().to_owned();
    let me: Value = app.get_as(&token, "/auth/me").await.json().await.unwrap();
    assert_eq!(me["agency_id"], agency.as_str());
    assert_eq!(me["roles"], json!(["agency-admin"]));
    let class = app
        .http
        .post(app.api("/device-classes"))
        .bearer_auth(&token)
        .json(&json!({"name": "Light", "functions": [{"id": "lampMonitor001", "type": "LampMonitorFunction"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        class.status(),
        201,
        "the new admin works in its agency at once"
    );

    // The agency's admin cannot create users in another agency.
    let elsewhere = app
        .http
        .post(app.api("/users"))
        .bearer_auth(&token)
        .json(&json!({
            "email": "intruder@gatineau.example", "display_name": "Intruder",
            "roles": ["agency-admin"], "agency_id": app.admin_agency,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 404);
}
