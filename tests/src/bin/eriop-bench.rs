//! `eriop-bench`: measures ERIOP end to end on this machine, against the real services, with
//! the gateway and projections built in-process on a fresh database and NATS prefix.
//!
//! Commands: `POST /api/v1/agencies` answered after the read model shows the agency (so each
//! one travels aggregate, event store, relay, JetStream, projection); logins (argon2id-bound);
//! telemetry: QoS 1 states messages from virtual devices through a private TLS Mosquitto, the
//! bridge, JetStream and the projector into the telemetry table (end to end, until the last
//! row is committed).

use std::time::{Duration, Instant};

use clap::Parser;
use eriop_tests::{TestApp, TestDb};
use futures::stream::{self, StreamExt};

/// Measures ERIOP's command path and login on this machine (real PostgreSQL, NATS, Redis).
///
/// Needs the services of `make services`. Prints progress to stderr and a summary to stdout.
#[derive(Parser)]
#[command(about, long_about)]
struct Cli {
    /// Agencies to create (each a full command round trip with read-your-writes).
    #[arg(long, default_value_t = 2000)]
    commands: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Logins to make (each verifies an argon2id hash: CPU-bound by design).
    #[arg(long, default_value_t = 100)]
    logins: usize,
    /// Telemetry: states messages to send (4 samples each); 0 skips.
    #[arg(long, default_value_t = 20_000)]
    telemetry_messages: usize,
    /// Telemetry: virtual devices sending them.
    #[arg(long, default_value_t = 50)]
    devices: usize,
}

struct Summary {
    count: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Summary {
    fn print(&mut self, what: &str) {
        self.latencies.sort();
        let pct = |p: f64| {
            let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
            self.latencies[i].as_secs_f64() * 1000.0
        };
        println!(
            "{what}: {} in {:.2} s = {:.0}/s; latency ms p50 {:.1}, p95 {:.1}, p99 {:.1}, max {:.1}",
            self.count,
            self.elapsed.as_secs_f64(),
            self.count as f64 / self.elapsed.as_secs_f64(),
            pct(0.50),
            pct(0.95),
            pct(0.99),
            pct(1.0),
        );
    }
}

async fn measure<F, Fut>(what: &str, count: usize, concurrency: usize, one: F) -> Summary
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(count);
    let mut done = stream::iter(0..count)
        .map(|n| {
            let fut = one(n);
            async move {
                let t = Instant::now();
                fut.await;
                t.elapsed()
            }
        })
        .buffer_unordered(concurrency);
    while let Some(latency) = done.next().await {
        latencies.push(latency);
        if latencies.len() % (count / 10).max(1) == 0 {
            eprintln!("{what}: {}/{count}", latencies.len());
        }
    }
    Summary {
        count,
        elapsed: started.elapsed(),
        latencies,
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    eprintln!("starting ERIOP in-process on a fresh database...");
    let broker = eriop_tests::mosquitto::Broker::start_tls();
    let (port, ca) = (broker.port, broker.ca_file());
    let app = TestApp::spawn_with(TestDb::migrated().await, move |s| {
        // The benchmark measures, it does not get throttled.
        s.login_attempts_per_ip_per_minute = u32::MAX;
        s.log_level = "warn".into();
        s.mqtt_broker_host = "127.0.0.1".into();
        s.mqtt_broker_port = port;
        s.mqtt_use_tls = true;
        s.mqtt_ca_file = Some(ca);
        // Room for the whole run: a full TELEMETRY would drop its oldest batches.
        let dev = eriop_nats::streams::StreamLimits::development();
        s.stream_events_max_bytes = dev.events;
        s.stream_telemetry_max_bytes = dev.telemetry;
        s.stream_device_max_bytes = dev.device;
        s.stream_commands_max_bytes = dev.commands;
        s.stream_dlq_max_bytes = dev.dlq;
    })
    .await;
    let app = &app;

    let mut commands = measure("commands", cli.commands, cli.concurrency, |n| async move {
        let response = app.create_agency(&format!("Bench agency {n}")).await;
        assert_eq!(
            response.status(),
            201,
            "the read model lagged past its bound"
        );
    })
    .await;
    commands.print("create agency (read your writes)");

    app.create_user(
        "bench@eriop.test",
        "correct horse battery staple",
        &["viewer"],
    )
    .await;
    let mut logins = measure("logins", cli.logins, cli.concurrency, |_| async move {
        let response = app
            .try_login("bench@eriop.test", "correct horse battery staple")
            .await;
        assert_eq!(response.status(), 200);
    })
    .await;
    logins.print("login (argon2id m=19 MiB t=2 p=1)");

    if cli.telemetry_messages > 0 {
        telemetry(app, cli.telemetry_messages, cli.devices.max(1)).await;
    }
}

/// States messages from `devices` virtual lights, as fast as QoS 1 lets them go, until every
/// sample is a committed row.
async fn telemetry(app: &TestApp, messages: usize, devices: usize) {
    use eriop_bridge::simulator::{light_states, LightId, VirtualLight};
    let class: serde_json::Value = app
        .request(reqwest::Method::POST, "/device-classes")
        .json(&serde_json::json!({"name": "Bench light", "functions": [
            {"id": "lampMonitor001", "type": "LampMonitorFunction"},
            {"id": "lampActuator001", "type": "LampActuatorFunction"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    app.own_registry("bench").await;
    let mut csv = String::from("class_id,registry,serial,name\n");
    for n in 0..devices {
        csv.push_str(&format!(
            "{},bench,SN-{n},Bench {n}\n",
            class["id"].as_str().unwrap()
        ));
    }
    let report: serde_json::Value = app
        .request(reqwest::Method::POST, "/devices/bulk")
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["registered"], devices);
    let mut lights = Vec::new();
    for n in 0..devices {
        let mut s = app.settings.clone();
        s.mqtt_client_id = format!("bench-{n}");
        let mut options = eriop_bridge::mqtt_options(&s).unwrap();
        options.set_manual_acks(false);
        let id = LightId {
            registry: "bench".into(),
            serial: format!("SN-{n}"),
        };
        lights.push(VirtualLight::connect(id, options, false).await);
    }
    let per_device = messages / devices;
    let expected = (per_device * devices * 4) as i64;
    let base = chrono::Utc::now().timestamp_millis() - 86_400_000;
    eprintln!(
        "telemetry: {} messages from {devices} devices...",
        per_device * devices
    );
    let started = Instant::now();
    let senders = lights.iter().map(|light| async move {
        for i in 0..per_device {
            light
                .states(base + i as i64, light_states(i as u64))
                .await
                .unwrap();
        }
    });
    let sending = futures::future::join_all(senders);
    let counting = async {
        let mut last_report = Instant::now();
        loop {
            let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM telemetry WHERE function_id <> 'comm001' AND attribute <> 'communicationFailure'")
                .fetch_one(&app.db.pool)
                .await
                .unwrap();
            if rows >= expected {
                return;
            }
            if last_report.elapsed() >= Duration::from_secs(2) {
                eprintln!("telemetry: {rows}/{expected} samples stored");
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (_, ()) = tokio::join!(sending, counting);
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "telemetry (MQTT QoS 1 over TLS -> bridge -> JetStream -> projector -> PostgreSQL): {} messages, {expected} samples in {elapsed:.2} s = {:.0} messages/s, {:.0} samples/s",
        per_device * devices,
        (per_device * devices) as f64 / elapsed,
        expected as f64 / elapsed
    );
}
