//! Readiness names the dependency that is down, and recovers when it is back.

use std::time::Duration;

use eriop_tests::{wait, NatsServer, TcpProxy, TestApp, TestDb};
use serde_json::Value;

async fn readiness(app: &TestApp) -> (u16, Value) {
    let response = app
        .http
        .get(format!("{}/health/ready", app.base))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn await_ready(app: &TestApp, status: u16, check: &str, state: &str) -> Value {
    wait::until(
        &format!("readiness {status} with {check} {state}"),
        Duration::from_secs(30),
        || async {
            let (code, body) = readiness(app).await;
            (code == status && body["checks"][check]["status"] == state).then_some(body)
        },
    )
    .await
}

#[tokio::test]
async fn readiness_follows_postgres_nats_and_the_bridges_mqtt_link() {
    let mut nats = NatsServer::start().await;
    let proxy = TcpProxy::start("127.0.0.1:5432").await;
    let mqtt = TcpProxy::start("127.0.0.1:1883").await;
    let db = TestDb::migrated().await;
    let (db_url, nats_url, mqtt_port) = (db.url_via(proxy.port), nats.url(), mqtt.port);
    let app = TestApp::spawn_with(db, |s| {
        s.database_url = db_url.into();
        s.nats_url = nats_url.into();
        s.mqtt_broker_port = mqtt_port;
    })
    .await;

    let live = app
        .http
        .get(format!("{}/health/live", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let body = await_ready(&app, 200, "mqtt", "up").await;
    assert_eq!(body["status"], "ready");
    for dep in ["postgres", "redis", "nats", "mqtt"] {
        assert_eq!(body["checks"][dep]["status"], "up", "{body}");
    }

    proxy.cut();
    let body = await_ready(&app, 503, "postgres", "down").await;
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["checks"]["nats"]["status"], "up");
    // A command meanwhile is refused as unavailable (retry later), not a server error.
    let refused = app.create_agency("While the database is away").await;
    assert_eq!(refused.status(), 503);
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    proxy.restore();
    await_ready(&app, 200, "postgres", "up").await;

    nats.stop();
    let body = await_ready(&app, 503, "nats", "down").await;
    assert_eq!(body["checks"]["postgres"]["status"], "up");
    nats.resume().await;
    await_ready(&app, 200, "nats", "up").await;

    // The broker goes away: the bridge reports its link down, readiness says so.
    mqtt.cut();
    let body = await_ready(&app, 503, "mqtt", "down").await;
    assert!(
        body["checks"]["mqtt"]["error"]
            .as_str()
            .unwrap()
            .contains("MQTT broker"),
        "{body}"
    );
    mqtt.restore();
    await_ready(&app, 200, "mqtt", "up").await;
}
