//! Traces (issue 14, item 3): a request's W3C `traceparent` travels with the event it causes
//! (event metadata, the NATS header the relay sets) into the projections, and every log line
//! on the way carries its trace id; a header that is not a `traceparent` starts a new trace.

use eriop_nats::Stream;
use eriop_tests::capture::Captured;
use eriop_tests::TestApp;
use reqwest::Method;
use serde_json::{json, Value};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

// current_thread runtime (the default): the app's tasks run on this thread, so the
// thread's default subscriber sees their logs, the projections' included.
#[tokio::test]
async fn a_requests_trace_id_is_in_the_gateways_and_the_projections_log_lines() {
    let (captured, _guard) = Captured::start("info");
    let app = TestApp::spawn().await;
    let created = app
        .request(Method::POST, "/agencies")
        .header("traceparent", format!("00-{TRACE}-00f067aa0ba902b7-01"))
        .json(&json!({ "name": "Traced agency" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "stored and projected");
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The event carries the trace, one span further than the caller's.
    let stored: String = sqlx::query_scalar(
        "SELECT metadata ->> 'traceparent' FROM events WHERE aggregate_id = $1 AND sequence = 1",
    )
    .bind(&id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert!(stored.starts_with(&format!("00-{TRACE}-")), "{stored}");
    assert!(
        !stored.contains("00f067aa0ba902b7"),
        "the gateway's own span: {stored}"
    );
    // So does its NATS message.
    let js = app.jetstream().await;
    let stream = js
        .get_stream(app.topology.stream_name(Stream::Events))
        .await
        .unwrap();
    let message = stream
        .get_last_raw_message_by_subject(&app.topology.event_subject("agency", &id))
        .await
        .unwrap();
    assert_eq!(
        message.headers.get("traceparent").map(|v| v.as_str()),
        Some(stored.as_str())
    );

    let lines: Vec<Value> = captured
        .text()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let traced = |target: &str| {
        lines
            .iter()
            .filter(|l| {
                l["target"].as_str().is_some_and(|t| t.starts_with(target))
                    && l["span"]["trace_id"] == TRACE
            })
            .count()
    };
    assert!(traced("access") >= 1, "the gateway's access line");
    assert!(traced("eriop_projections") >= 1, "the projection's line");

    // Not a traceparent: ignored, a new trace starts (the bytes are not logged).
    let odd = app
        .request(Method::GET, &format!("/agencies/{id}"))
        .header("traceparent", "00-ZZZZ-not-a-trace")
        .header("x-request-id", "req-odd-trace")
        .send()
        .await
        .unwrap();
    assert_eq!(odd.status(), 200);
    let text = captured.text();
    let access: Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["target"] == "access" && l["request_id"] == "req-odd-trace")
        .expect("the access line");
    let trace_id = access["span"]["trace_id"].as_str().unwrap();
    assert_eq!(trace_id.len(), 32);
    assert_ne!(trace_id, TRACE);
    assert!(!text.contains("ZZZZ-not-a-trace"));
}
