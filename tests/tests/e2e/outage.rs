//! NATS stopped while agencies are created, then started: every event reaches EVENTS and the
//! read model, in order, none twice.

use std::collections::HashMap;
use std::time::Duration;

use eriop_tests::{wait, NatsServer, TestApp, TestDb};
use serde_json::{json, Value};

#[tokio::test]
async fn events_stored_during_a_nats_outage_arrive_in_order_once() {
    let mut nats = NatsServer::start().await;
    let url = nats.url();
    let app = TestApp::spawn_with(TestDb::migrated().await, |s| {
        s.nats_url = url.into();
        // Keep the test short: while NATS is down, commands answer 202 after this.
        s.read_your_writes_timeout_ms = 300;
        s.nats_request_timeout_ms = 1_000;
    })
    .await;
    let before = app.created_agency("Before the outage").await;

    nats.stop();
    let mut ids = vec![before["id"].as_str().unwrap().to_owned()];
    for n in 0..5 {
        let response = app.create_agency(&format!("Agency {n}")).await;
        // Stored, not yet projected: the API says so instead of failing.
        assert_eq!(response.status(), 202, "{:?}", response.text().await);
        let body: Value = response.json().await.unwrap();
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    for id in &ids[1..3] {
        let response = app
            .patch_agency(
                id,
                json!({ "name": format!("Renamed {id}"), "status": "suspended" }),
            )
            .await;
        assert_eq!(response.status(), 202);
    }
    let agency_events = app
        .db
        .count("SELECT count(*) FROM events WHERE aggregate_type = 'agency'")
        .await;
    // The platform agency (bootstrap), then 1 + 5 creations and 2 renames and suspensions.
    assert_eq!(agency_events, 1 + 1 + 5 + 2 * 2);
    let stored = app.db.count("SELECT count(*) FROM events").await;

    nats.resume().await;

    // Every event reaches EVENTS once ...
    app.await_stream_len(u64::try_from(stored).unwrap()).await;
    let on_stream = app.events_on_stream().await;
    let mut seen = std::collections::HashSet::new();
    let mut last: HashMap<String, i64> = HashMap::new();
    for (msg_id, event) in &on_stream {
        assert!(seen.insert(msg_id.clone()), "{msg_id} twice");
        let previous = last
            .insert(event.aggregate_id.clone(), event.sequence)
            .unwrap_or(0);
        assert_eq!(event.sequence, previous + 1, "{msg_id} out of order");
    }
    assert_eq!(on_stream.len() as i64, stored);

    // ... and the read model, whose versions match the store.
    wait::until_eq(
        "the read model to catch up",
        Duration::from_secs(60),
        agency_events,
        || async {
            app.db
                .count("SELECT coalesce(sum(version), 0)::bigint FROM agencies")
                .await
        },
    )
    .await;
    for id in &ids[1..3] {
        let agency = app.agency(id).await;
        assert_eq!(agency["status"], "suspended");
        assert_eq!(agency["name"], format!("Renamed {id}"));
        assert_eq!(agency["version"], 3);
    }
    // ... and the relay forgets them once acked.
    wait::until_eq(
        "the relay to finish",
        Duration::from_secs(30),
        0,
        || async { app.db.count("SELECT count(*) FROM relay_pending").await },
    )
    .await;
}
