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

/// The downlink hop: a command's trace goes from the request through the supervisor's
/// `COMMANDS` header to the bridge, whose "command sent" line carries its trace id.
#[tokio::test]
async fn a_commands_trace_reaches_the_bridges_downlink_log_line() {
    use std::time::Duration;

    use eriop_tests::mosquitto::Broker;

    use crate::devices::{app_on, create_class, light, register};

    let (captured, _guard) = Captured::start("info");
    let broker = Broker::start_tls();
    let app = app_on(&broker).await;
    let class = create_class(&app, 600).await;
    let id = register(&app, &class, "reg-trace", "TR-1").await;
    let mut lamp = light(&app, "reg-trace", "TR-1", true).await;
    lamp.heartbeat(1).await.unwrap();
    let issued = app
        .request(Method::POST, &format!("/devices/{id}/commands"))
        .header("traceparent", format!("00-{TRACE}-00f067aa0ba902b7-01"))
        .json(&json!({"type": "override", "level": 40, "ramp_seconds": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(issued.status(), 202, "{:?}", issued.text().await);
    tokio::time::timeout(Duration::from_secs(30), lamp.next_command())
        .await
        .expect("the command reaches the device")
        .unwrap();

    // The downlink message carries the trace...
    let js = app.jetstream().await;
    let stream = js
        .get_stream(app.topology.stream_name(Stream::Commands))
        .await
        .unwrap();
    let message = stream
        .get_last_raw_message_by_subject(&app.topology.command_subject(&app.admin_agency, &id))
        .await
        .unwrap();
    let header = message
        .headers
        .get("traceparent")
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    assert!(header.starts_with(&format!("00-{TRACE}-")), "{header:?}");
    // ... and so does the bridge's line (written once the command is handed to MQTT: await it).
    let sent = eriop_tests::wait::until(
        "the bridge's downlink line",
        Duration::from_secs(10),
        || {
            let captured = captured.clone();
            async move {
                captured
                    .text()
                    .lines()
                    .find(|l| l.contains("command sent to the device"))
                    .map(str::to_owned)
            }
        },
    )
    .await;
    assert!(sent.contains(TRACE), "{sent}");
}
