//! Metrics (issue 14): what `/metrics` on the gateway, and on the bridge's and the
//! projections' operations ports, says after known traffic: the counts match what was sent.

use std::time::Duration;

use eriop_tests::mosquitto::Broker;
use eriop_tests::{wait, TestApp, TestDb};
use reqwest::Method;
use serde_json::json;

use crate::devices::{app_on, create_class, light, register, rows};

/// The value of the sample `name{labels}` in an exposition (labels exactly as written,
/// in their order), or `None` when it is not there.
pub(crate) fn sample(exposition: &str, name: &str, labels: &str) -> Option<f64> {
    let key = if labels.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{labels}}}")
    };
    exposition.lines().find_map(|line| {
        let (k, v) = line.rsplit_once(' ')?;
        (k == key).then(|| v.parse().ok()).flatten()
    })
}

/// The metric families a PromQL text names (`eriop_...`), without the sample suffixes.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("eriop_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_count", "_sum", "_total"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        // Job names (eriop-bridge) use a dash and are not matched.
        names.insert(family.to_owned());
        rest = &tail[end..];
    }
    names
}

/// `/metrics` of the service at `base`, checked to be OpenMetrics text.
pub(crate) async fn scrape(app: &TestApp, base: &str) -> String {
    let response = app
        .http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    response.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_ingest_and_api_calls_each_services_metrics_count_what_happened() {
    let broker = Broker::start_tls();
    let (port, ca) = (broker.port, broker.ca_file());
    let app = TestApp::spawn_with(TestDb::migrated().await, move |s| {
        s.mqtt_broker_host = "127.0.0.1".into();
        s.mqtt_broker_port = port;
        s.mqtt_use_tls = true;
        s.mqtt_ca_file = Some(ca);
        // Two logins a minute from one address: the third and fourth are refused.
        s.login_attempts_per_ip_per_minute = 2;
    })
    .await;
    let class = create_class(&app, 600).await;
    register(&app, &class, "reg-metrics", "SN-1").await;

    // Wrong passwords from one address (the harness's own login counted too): past two a
    // minute, the login throttle refuses.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let response = app.try_login("nobody@eriop.test", "not the password").await;
        statuses.push(response.status().as_u16());
    }
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    assert!(
        throttled >= 2 && statuses.iter().all(|s| [401, 429].contains(s)),
        "{statuses:?}"
    );

    // API: five reads of the device list, and one route that does not exist.
    for _ in 0..5 {
        let response = app.request(Method::GET, "/devices").send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let missing = app
        .request(Method::GET, "/devices/not-a-uuid")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400);
    let gateway = scrape(&app, &app.base).await;
    let list = r#"method="GET",route="/api/v1/devices",status="200""#;
    assert_eq!(
        sample(&gateway, "eriop_gateway_http_requests_total", list),
        Some(5.0),
        "{gateway}"
    );
    // Each of the five is one hot read, kept from a moment ago or read.
    let from = |f: &str| {
        sample(
            &gateway,
            "eriop_gateway_hot_read_answers_total",
            &format!(r#"from="{f}""#),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(from("kept") + from("read"), 5.0, "{gateway}");
    // The route's template, never the path that was asked.
    let refused = r#"method="GET",route="/api/v1/devices/{id}",status="400""#;
    assert_eq!(
        sample(&gateway, "eriop_gateway_http_requests_total", refused),
        Some(1.0),
        "{gateway}"
    );
    assert!(!gateway.contains("not-a-uuid"), "{gateway}");
    assert_eq!(
        sample(
            &gateway,
            "eriop_gateway_rate_limit_refusals_total",
            r#"limit="login""#
        ),
        Some(throttled as f64),
        "{gateway}"
    );
    assert_eq!(
        sample(
            &gateway,
            "eriop_gateway_http_request_duration_seconds_count",
            r#"method="GET",route="/api/v1/devices""#
        ),
        Some(5.0),
        "{gateway}"
    );
    // Everything stored was relayed (the API waits for its read models).
    wait::until(
        "an empty relay backlog",
        Duration::from_secs(20),
        || async {
            let text = scrape(&app, &app.base).await;
            (sample(&text, "eriop_gateway_relay_backlog_events", "") == Some(0.0)).then_some(())
        },
    )
    .await;

    // Ingest: 40 MQTT messages from a registered device, 3 from an unknown one.
    let good = light(&app, "reg-metrics", "SN-1", false).await;
    let stranger = light(&app, "reg-metrics", "SN-UNKNOWN", false).await;
    let now = chrono::Utc::now().timestamp_millis();
    for i in 0..40 {
        good.states(now + i, json!({"lampMonitor001.activePower": i as f64}))
            .await
            .unwrap();
    }
    for i in 0..3 {
        stranger
            .states(now + i, json!({"lampMonitor001.activePower": 1.0}))
            .await
            .unwrap();
    }
    wait::until_eq("40 stored samples", Duration::from_secs(30), 40, || {
        rows(&app)
    })
    .await;
    wait::until("the bridge's counts", Duration::from_secs(20), || async {
        let text = scrape(&app, &app.bridge_ops).await;
        let acked = sample(&text, "eriop_bridge_mqtt_messages_acked_total", "")?;
        (acked >= 43.0).then_some(text)
    })
    .await;
    let bridge = scrape(&app, &app.bridge_ops).await;
    let count = |name: &str| sample(&bridge, name, "").unwrap_or(-1.0);
    assert_eq!(
        count("eriop_bridge_mqtt_messages_received_total"),
        43.0,
        "{bridge}"
    );
    assert_eq!(
        count("eriop_bridge_mqtt_messages_acked_total"),
        43.0,
        "{bridge}"
    );
    assert_eq!(
        count("eriop_bridge_messages_dead_lettered_total"),
        3.0,
        "{bridge}"
    );
    assert_eq!(
        count("eriop_bridge_samples_published_total"),
        40.0,
        "{bridge}"
    );
    assert!(
        count("eriop_bridge_jetstream_messages_published_total") >= 4.0,
        "{bridge}"
    );
    assert_eq!(count("eriop_bridge_mqtt_link_up"), 1.0, "{bridge}");

    // Projections: every projection caught up, and says so.
    wait::until("no projection lag", Duration::from_secs(30), || async {
        let text = scrape(&app, &app.projections_ops).await;
        let caught_up = ["agencies", "users", "devices", "telemetry"]
            .iter()
            .all(|p| {
                sample(
                    &text,
                    "eriop_projection_lag_events",
                    &format!(r#"projection="{p}""#),
                ) == Some(0.0)
            });
        caught_up.then_some(())
    })
    .await;
    let projections = scrape(&app, &app.projections_ops).await;
    assert_eq!(
        sample(
            &projections,
            "eriop_projection_consumer_up",
            r#"projection="telemetry""#
        ),
        Some(1.0),
        "{projections}"
    );
    // Every telemetry row stored, counted once (what `make bench` follows ingest by): the 40
    // samples and whatever else the light reported.
    let stored = app.db.count("SELECT count(*) FROM telemetry").await;
    assert!(stored >= 40);
    assert_eq!(
        sample(&projections, "eriop_projection_telemetry_rows_total", ""),
        Some(stored as f64),
        "{projections}"
    );
    // Every metric the shipped alerts and dashboard use is one the services expose.
    let exposed = [gateway.as_str(), bridge.as_str(), projections.as_str()].concat();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    for file in ["prometheus/alerts.yml", "grafana/dashboards/eriop.json"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let names = metric_names(&text);
        assert!(names.len() >= 5, "{file} names metrics: {names:?}");
        for name in names {
            assert!(
                exposed.contains(&format!("# TYPE {name} ")),
                "{file} uses {name}, which no service exposes"
            );
        }
    }
    for base in [&app.bridge_ops, &app.projections_ops] {
        let ready = app
            .http
            .get(format!("{base}/health/ready"))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 200, "{base}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_projection_held_up_shows_its_lag_and_an_unready_bridge_says_why() {
    use sqlx::Connection;
    let broker = Broker::start_tls();
    let app = app_on(&broker).await;
    // The agencies read model cannot be written (reads still can): its projection is held.
    let mut holder = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    let mut held = holder.begin().await.unwrap();
    sqlx::query("LOCK TABLE agencies IN SHARE MODE")
        .execute(&mut *held)
        .await
        .unwrap();
    let response = app.create_agency("Held up").await;
    assert!(
        response.status().is_success(),
        "stored: {:?}",
        response.status()
    );
    let label = r#"projection="agencies""#;
    wait::until(
        "the agencies projection's lag",
        Duration::from_secs(30),
        || async {
            let text = scrape(&app, &app.projections_ops).await;
            let events = sample(&text, "eriop_projection_lag_events", label)?;
            let seconds = sample(&text, "eriop_projection_lag_seconds", label)?;
            (events >= 1.0 && seconds > 0.0).then_some(())
        },
    )
    .await;
    held.rollback().await.unwrap();
    wait::until(
        "the agencies projection caught up",
        Duration::from_secs(30),
        || async {
            let text = scrape(&app, &app.projections_ops).await;
            let caught_up = sample(&text, "eriop_projection_lag_events", label) == Some(0.0)
                && sample(&text, "eriop_projection_lag_seconds", label) == Some(0.0);
            caught_up.then_some(())
        },
    )
    .await;

    // The broker goes away: the bridge's readiness says the MQTT link is down.
    drop(broker);
    let body = wait::until("the bridge unready", Duration::from_secs(30), || async {
        let ready = app
            .http
            .get(format!("{}/health/ready", app.bridge_ops))
            .send()
            .await
            .unwrap();
        (ready.status() == 503).then_some(ready.text().await.unwrap())
    })
    .await;
    assert!(body.contains("MQTT link is down"), "{body}");
    let text = scrape(&app, &app.bridge_ops).await;
    assert_eq!(
        sample(&text, "eriop_bridge_mqtt_link_up", ""),
        Some(0.0),
        "{text}"
    );
}

/// While another replica holds the rollup's turn, a closed minute's mark waits: the
/// projections show how long, and take it (and show 0) once the turn is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_telemetry_rollup_waiting_for_its_turn_shows_how_far_behind_it_is() {
    use sqlx::Connection;
    let app = TestApp::spawn().await;
    let mut other_replica = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(eriop_projections::telemetry::rollup::LOCK)
        .execute(&mut other_replica)
        .await
        .unwrap();
    // A device's minute ten minutes ago, marked and not rolled up.
    sqlx::query(
        "INSERT INTO telemetry_touched (agency_id, minute, device_ids)
         VALUES (gen_random_uuid(), date_trunc('minute', now()) - INTERVAL '10 minutes', ARRAY[gen_random_uuid()])",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    let behind = || async {
        let text = scrape(&app, &app.projections_ops).await;
        sample(
            &text,
            "eriop_projection_telemetry_rollup_behind_seconds",
            "",
        )
    };
    let waited = behind().await.unwrap();
    assert!(
        (400.0..700.0).contains(&waited),
        "about ten minutes less the grace: {waited}"
    );
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(eriop_projections::telemetry::rollup::LOCK)
        .execute(&mut other_replica)
        .await
        .unwrap();
    wait::until("the rollup caught up", Duration::from_secs(30), || async {
        (behind().await == Some(0.0)).then_some(())
    })
    .await;
    assert_eq!(
        app.db.count("SELECT count(*) FROM telemetry_touched").await,
        0
    );
}
