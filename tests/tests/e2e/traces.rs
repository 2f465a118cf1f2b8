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

    let (captured, _guard) = Captured::start("info");
    let broker = Broker::start_tls();
    let (app, id) = command_a_light(
        &broker,
        "reg-trace",
        ("traceparent", &format!("00-{TRACE}-00f067aa0ba902b7-01")),
    )
    .await;

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

/// Waits until the exported spans hold what `found` looks for: flushes the exporter (on a
/// blocking thread: the SDK's flush waits for its export thread), then looks.
async fn exported<T>(
    what: &str,
    provider: &opentelemetry_sdk::trace::SdkTracerProvider,
    receiver: &eriop_tests::otlp::Receiver,
    found: impl Fn(&[eriop_tests::otlp::ReceivedSpan]) -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let flushing = provider.clone();
        tokio::task::spawn_blocking(move || flushing.force_flush())
            .await
            .unwrap()
            .unwrap();
        let spans = receiver.spans();
        if let Some(hit) = found(&spans) {
            return hit;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} was not exported; spans: {spans:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn otlp_pipeline(
    receiver: &eriop_tests::otlp::Receiver,
) -> opentelemetry_sdk::trace::SdkTracerProvider {
    eriop_nats::otel::tracer_provider(&eriop_nats::otel::OtlpSettings {
        traces_endpoint: receiver.traces_endpoint.clone(),
        service_name: "eriop-under-test".into(),
    })
    .unwrap()
}

/// OTLP export: a request's span continues the caller's `traceparent`, the id the gateway
/// stores and propagates is its exported span's own, and the projection's span is that
/// span's child; a collector shows the trace the logs name.
#[tokio::test]
async fn spans_are_exported_over_otlp_and_the_projections_span_is_the_requests_child() {
    let receiver = eriop_tests::otlp::Receiver::start().await;
    let provider = otlp_pipeline(&receiver);
    let (captured, _guard) = Captured::start_exporting("info", eriop_nats::otel::tracer(&provider));
    let app = TestApp::spawn().await;
    let created = app
        .request(Method::POST, "/agencies")
        .header("traceparent", format!("00-{TRACE}-00f067aa0ba902b7-01"))
        .header("x-request-id", "req-exported")
        .json(&json!({ "name": "Exported agency" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let request = exported("the request's span", &provider, &receiver, |spans| {
        spans
            .iter()
            .find(|s| s.trace_id == TRACE && s.parent_span_id == "00f067aa0ba902b7")
            .cloned()
    })
    .await;
    assert_eq!(
        request.name, "POST /api/v1/agencies",
        "method and route template"
    );
    assert_eq!(request.service, "eriop-under-test");
    assert_eq!(request.attribute("request_id"), Some("req-exported"));
    assert_eq!(request.attribute("http.response.status_code"), Some("201"));

    // The event carries the exported span's own id: the next hop's parent exists.
    let stored: String = sqlx::query_scalar(
        "SELECT metadata ->> 'traceparent' FROM events WHERE aggregate_id = $1 AND sequence = 1",
    )
    .bind(&id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(stored, format!("00-{TRACE}-{}-01", request.span_id));

    let projected = exported("the projection's span", &provider, &receiver, |spans| {
        spans
            .iter()
            .find(|s| s.name == "project agencies" && s.trace_id == TRACE)
            .cloned()
    })
    .await;
    assert_eq!(projected.parent_span_id, request.span_id);
    assert_eq!(projected.attribute("projection"), Some("agencies"));
    assert_eq!(*receiver.rejected.lock().unwrap(), 0);

    // The log lines name the same trace.
    let access = captured
        .lines_of("access")
        .into_iter()
        .find(|l| l["request_id"] == "req-exported")
        .expect("the access line");
    assert_eq!(access["span"]["trace_id"], TRACE);
}

/// Without a caller's `traceparent`, the request's span is the root of a new trace, and the
/// downlink hops follow it: request, the supervisor's forward, the bridge's send, each the
/// child of the one before.
#[tokio::test]
async fn a_commands_spans_chain_from_the_request_through_the_supervisor_to_the_bridge() {
    use eriop_tests::mosquitto::Broker;

    let receiver = eriop_tests::otlp::Receiver::start().await;
    let provider = otlp_pipeline(&receiver);
    let (captured, _guard) = Captured::start_exporting("info", eriop_nats::otel::tracer(&provider));
    let broker = Broker::start_tls();
    let _ = command_a_light(&broker, "reg-otlp", ("x-request-id", "req-otlp-command")).await;

    let request = exported(
        "the command request's span",
        &provider,
        &receiver,
        |spans| {
            spans
                .iter()
                .find(|s| s.attribute("request_id") == Some("req-otlp-command"))
                .cloned()
        },
    )
    .await;
    assert_eq!(
        request.parent_span_id, "",
        "a new trace starts at the request"
    );
    let forward = exported("the supervisor's span", &provider, &receiver, |spans| {
        spans
            .iter()
            .find(|s| s.name == "forward command" && s.trace_id == request.trace_id)
            .cloned()
    })
    .await;
    assert_eq!(forward.parent_span_id, request.span_id);
    let send = exported("the bridge's span", &provider, &receiver, |spans| {
        spans
            .iter()
            .find(|s| s.name == "send command" && s.trace_id == request.trace_id)
            .cloned()
    })
    .await;
    assert_eq!(send.parent_span_id, forward.span_id);
    // The bridge's line names the trace the collector shows.
    assert!(captured
        .lines_of("eriop_bridge::downlink")
        .iter()
        .any(|l| l["trace_id"] == request.trace_id.as_str()));
}

/// A light on `broker` (registry `registry`) sent one command with `header`, received by the
/// light: the app and the device's id.
async fn command_a_light(
    broker: &eriop_tests::mosquitto::Broker,
    registry: &str,
    header: (&str, &str),
) -> (TestApp, String) {
    use crate::devices::{app_on, create_class, light, register};

    let app = app_on(broker).await;
    let class = create_class(&app, 600).await;
    let id = register(&app, &class, registry, "L-1").await;
    let mut lamp = light(&app, registry, "L-1", true).await;
    lamp.heartbeat(1).await.unwrap();
    let issued = app
        .request(Method::POST, &format!("/devices/{id}/commands"))
        .header(header.0, header.1)
        .json(&json!({"type": "override", "level": 40, "ramp_seconds": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(issued.status(), 202, "{:?}", issued.text().await);
    tokio::time::timeout(std::time::Duration::from_secs(30), lamp.next_command())
        .await
        .expect("the command reaches the device")
        .unwrap();
    (app, id)
}
