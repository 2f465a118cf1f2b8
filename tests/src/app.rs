//! The gateway and the projections service, built by their own builders (as `main.rs`
//! does) on a random port, against the test's own database and NATS prefix.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use eriop_gateway::auth::{ManualClock, ShiftedClock};
use eriop_gateway::relay::RelayStatus;
use eriop_nats::{Settings, StoredEvent, Stream, Topology};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;

use crate::{nats_url, unique_prefix, wait, TestDb};

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    /// An access token of the platform administrator.
    pub token: String,
    pub admin_id: String,
    /// The platform agency, the administrator's home.
    pub admin_agency: String,
    pub admin_email: String,
    pub admin_password: String,
    /// The gateway's clock: tests move it by hand.
    pub clock: ManualClock,
    /// The device supervisor's clock: the wall clock, which tests may move forward (a device
    /// silent past its timeout, without waiting for it).
    pub device_clock: ShiftedClock,
    pub settings: Settings,
    pub db: TestDb,
    pub topology: Topology,
    pub relay: Option<Arc<RelayStatus>>,
    /// The running bridge's status (a new one after `restart_bridge`).
    pub bridge: Arc<eriop_bridge::BridgeStatus>,
    /// The operations ports (`/metrics`, `/health/...`) of the running bridge and
    /// projections, as base URLs.
    pub bridge_ops: String,
    pub projections_ops: String,
    bridge_task: Option<tokio::task::JoinHandle<()>>,
    gateway_task: Option<tokio::task::JoinHandle<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Leave the test's streams when dropped (another app of the test goes on with them).
    pub keep_streams: bool,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(TestDb::migrated().await, |_| {}).await
    }

    /// Spawns with settings adjusted by `adjust` (another NATS, a proxied database, ...).
    pub async fn spawn_with(db: TestDb, adjust: impl FnOnce(&mut Settings)) -> Self {
        crate::init();
        let mut settings = Settings::development().unwrap();
        settings.secret_key = Some(
            format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            )
            .into(),
        );
        settings.database_url = db.url.clone().into();
        settings.nats_url = nats_url().into();
        settings.nats_prefix = unique_prefix();
        settings.redis_key_prefix = format!("{}:", settings.nats_prefix);
        settings.http_addr = "127.0.0.1:0".parse().unwrap();
        settings.bridge_ops_addr = "127.0.0.1:0".to_owned();
        settings.projections_ops_addr = "127.0.0.1:0".to_owned();
        // The shared Mosquitto on 1883 (development profile: plain MQTT).
        settings.mqtt_client_id = format!("{}-bridge", settings.nats_prefix);
        // Liveness tests watch each message's activity arrive; the coalescing of activity
        // (bridge/src/activity.rs) has its own unit tests and runs in the fault suite.
        settings.bridge_activity_interval_ms = 0;
        // Many tests share one nats-server, which reserves each stream's size from its store.
        let small = eriop_nats::streams::StreamLimits::small();
        settings.stream_events_max_bytes = small.events;
        settings.stream_telemetry_max_bytes = small.telemetry;
        settings.stream_device_max_bytes = small.device;
        settings.stream_commands_max_bytes = small.commands;
        settings.stream_dlq_max_bytes = small.dlq;
        // The harness's administrator works without MFA; the test of that rule turns it on.
        settings.platform_admins_need_mfa = false;
        // Tests send bursts far above a real device's rate; the rate test sets its own.
        settings.bridge_device_messages_per_second = 1_000_000;
        settings.bridge_device_burst = 1_000_000;
        // Tests send bursts from one address as one user; the rate-limit tests set their own.
        settings.rate_limit_per_user = 1_000_000;
        settings.rate_limit_per_agency = 1_000_000;
        settings.rate_limit_per_address = 1_000_000;
        adjust(&mut settings);

        let clock = ManualClock::starting_now();
        let device_clock = ShiftedClock::default();
        let gateway =
            eriop_gateway::App::build_with_clock(settings.clone(), Arc::new(clock.clone()))
                .await
                .unwrap()
                .with_device_clock(Arc::new(device_clock.clone()));
        let base = format!("http://127.0.0.1:{}", gateway.port());
        let relay = gateway.relay_status();
        let projections = eriop_projections::App::build(settings.clone())
            .await
            .unwrap();
        let projections_ops = ops_url(projections.ops_addr());
        let bridge = eriop_bridge::Bridge::build(&settings).await.unwrap();
        let bridge_status = bridge.status();
        let bridge_ops = ops_url(bridge.ops_addr());
        let bridge_task = Some(tokio::spawn(bridge.run_until(std::future::pending())));
        let gateway_task = Some(tokio::spawn(async move {
            let _ = gateway.run_until(std::future::pending()).await;
        }));
        let tasks = vec![tokio::spawn(projections.run_until(std::future::pending()))];
        let admin_email = format!("admin.{}@eriop.test", settings.nats_prefix);
        let admin_password = format!("correct horse {} staple", settings.nats_prefix);
        let admin = eriop_gateway::bootstrap::bootstrap_admin(
            &settings,
            &admin_email,
            Some(admin_password.clone().into()),
        )
        .await
        .unwrap();
        let mut app = Self {
            base,
            http: reqwest::Client::new(),
            token: String::new(),
            admin_id: admin.user_id.to_string(),
            admin_agency: admin.agency_id.to_string(),
            admin_email,
            admin_password,
            clock,
            device_clock,
            topology: Topology::from_settings(&settings),
            settings,
            db,
            relay,
            bridge: bridge_status,
            bridge_ops,
            projections_ops,
            bridge_task,
            gateway_task,
            tasks,
            keep_streams: false,
        };
        let (email, password) = (app.admin_email.clone(), app.admin_password.clone());
        app.token = app.login(&email, &password).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        app
    }

    /// The gateway's clock, in Unix seconds.
    pub fn clock_unix(&self) -> i64 {
        use eriop_gateway::auth::Clock;
        self.clock.now().millis() / 1000
    }

    /// Logs in, asserting a 200; answers the body (tokens, or an MFA challenge).
    pub async fn login(&self, email: &str, password: &str) -> Value {
        let response = self.try_login(email, password).await;
        assert_eq!(
            response.status(),
            200,
            "login of {email}: {:?}",
            response.text().await
        );
        response.json().await.unwrap()
    }

    pub async fn try_login(&self, email: &str, password: &str) -> Response {
        self.http
            .post(self.api("/auth/login"))
            .json(&serde_json::json!({ "email": email, "password": password }))
            .send()
            .await
            .unwrap()
    }

    /// Creates a user of the admin's agency with `roles` and a known password; answers its id.
    pub async fn create_user(&self, email: &str, password: &str, roles: &[&str]) -> String {
        let response = self
            .request(Method::POST, "/users")
            .json(&serde_json::json!({
                "email": email, "display_name": "Test User", "password": password, "roles": roles,
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
        response.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// An access token of `email` (logs in, asserting a 200 without MFA).
    pub async fn access_token(&self, email: &str, password: &str) -> String {
        self.login(email, password).await["access_token"]
            .as_str()
            .expect("tokens, not an MFA challenge")
            .to_owned()
    }

    /// A new agency and an `agency-admin` of it (a user of the admin's agency given a
    /// membership there), switched to it: `(agency id, access token in that agency)`.
    pub async fn admin_of_new_agency(&self, name: &str, email: &str) -> (String, String) {
        let password = "correct horse battery staple";
        let agency = self.created_agency(name).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let user = self.create_user(email, password, &["viewer"]).await;
        let membership = self
            .request(Method::PUT, &format!("/users/{user}/memberships/{agency}"))
            .json(&serde_json::json!({ "roles": ["agency-admin"] }))
            .send()
            .await
            .unwrap();
        assert_eq!(membership.status(), 204);
        let home = self.access_token(email, password).await;
        let switched: Value = self
            .http
            .post(self.api("/auth/switch-agency"))
            .bearer_auth(&home)
            .json(&serde_json::json!({ "agency_id": agency }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = switched["access_token"].as_str().unwrap().to_owned();
        (agency, token)
    }

    /// The refresh grant of the token endpoint (form body).
    pub async fn refresh(&self, refresh_token: &str) -> Response {
        self.http
            .post(self.api("/auth/token"))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ])
            .send()
            .await
            .unwrap()
    }

    /// A GET with another bearer token.
    pub async fn get_as(&self, token: &str, path: &str) -> Response {
        self.http
            .get(self.api(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    /// A request to the API, authenticated with the bootstrap token.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, self.api(path))
            .bearer_auth(&self.token)
    }

    /// Assigns the Fundamentum `registry` to `agency` (as the platform administrator),
    /// asserting a 201, or a 200 when it was that agency's already.
    pub async fn assign_registry(&self, registry: &str, agency: &str) {
        let response = self
            .request(Method::POST, "/registries")
            .json(&serde_json::json!({ "registry": registry, "agency_id": agency }))
            .send()
            .await
            .unwrap();
        assert!(
            matches!(response.status().as_u16(), 200 | 201),
            "assign {registry}: {:?}",
            response.text().await
        );
    }

    /// Assigns `registry` to the administrator's own agency (where the tests register devices).
    pub async fn own_registry(&self, registry: &str) {
        self.assign_registry(registry, &self.admin_agency).await;
    }

    pub async fn create_agency(&self, name: &str) -> Response {
        self.request(Method::POST, "/agencies")
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await
            .unwrap()
    }

    /// Creates an agency and answers its JSON, asserting a 201.
    pub async fn created_agency(&self, name: &str) -> Value {
        let response = self.create_agency(name).await;
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
        response.json().await.unwrap()
    }

    /// GETs an agency, asserting a 200.
    pub async fn agency(&self, id: &str) -> Value {
        let response = self
            .request(Method::GET, &format!("/agencies/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
        response.json().await.unwrap()
    }

    pub async fn patch_agency(&self, id: &str, body: Value) -> Response {
        self.request(Method::PATCH, &format!("/agencies/{id}"))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// A subscription to `subject` on the test's NATS server (core NATS), in place on the
    /// server when this returns: a round trip follows the subscribe (a flush only sends it).
    pub async fn subscribed(&self, subject: String) -> async_nats::Subscriber {
        let client = async_nats::connect(crate::nats_url()).await.unwrap();
        let subscriber = client.subscribe(subject).await.unwrap();
        jetstream::new(client).query_account().await.unwrap();
        subscriber
    }

    pub async fn jetstream(&self) -> jetstream::Context {
        let client = async_nats::connect(self.settings.nats_url_for_tests())
            .await
            .unwrap();
        jetstream::new(client)
    }

    /// Every message of one of the test's streams, in stream order: subject and payload.
    pub async fn messages_on(&self, which: Stream) -> Vec<(String, Vec<u8>)> {
        let js = self.jetstream().await;
        let mut stream = js
            .get_stream(self.topology.stream_name(which))
            .await
            .unwrap();
        let info = stream.info().await.unwrap().clone();
        let mut out = Vec::new();
        if info.state.messages == 0 {
            return out;
        }
        for seq in info.state.first_sequence..=info.state.last_sequence {
            if let Ok(message) = stream.get_raw_message(seq).await {
                out.push((message.subject.to_string(), message.payload.to_vec()));
            }
        }
        out
    }

    /// Every message of the test's `EVENTS` stream, in stream order, with its dedup id.
    pub async fn events_on_stream(&self) -> Vec<(String, StoredEvent)> {
        let js = self.jetstream().await;
        let mut stream = js
            .get_stream(self.topology.stream_name(Stream::Events))
            .await
            .unwrap();
        let info = stream.info().await.unwrap().clone();
        let mut out = Vec::new();
        for seq in info.state.first_sequence..=info.state.last_sequence {
            if info.state.messages == 0 {
                break;
            }
            let message = stream.get_raw_message(seq).await.unwrap();
            let id = message
                .headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .map(|v| v.to_string())
                .unwrap_or_default();
            out.push((id, serde_json::from_slice(&message.payload).unwrap()));
        }
        out
    }

    /// Every message of the test's `DLQ` stream, in order: its headers and its body.
    pub async fn dead_letters(&self) -> Vec<(async_nats::HeaderMap, Vec<u8>)> {
        let js = self.jetstream().await;
        let Ok(mut stream) = js.get_stream(self.topology.stream_name(Stream::Dlq)).await else {
            return Vec::new();
        };
        let info = stream.info().await.unwrap().clone();
        let mut out = Vec::new();
        if info.state.messages == 0 {
            return out;
        }
        for seq in info.state.first_sequence..=info.state.last_sequence {
            let m = stream.get_raw_message(seq).await.unwrap();
            out.push((m.headers.clone(), m.payload.to_vec()));
        }
        out
    }

    /// The reasons of the `DLQ` messages, in order.
    pub async fn dead_letter_reasons(&self) -> Vec<String> {
        self.dead_letters()
            .await
            .iter()
            .map(|(h, _)| {
                h.get(eriop_nats::dlq::REASON)
                    .map(|v| v.to_string())
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Waits until the `EVENTS` stream holds `n` messages.
    pub async fn await_stream_len(&self, n: u64) {
        let js = self.jetstream().await;
        let name = self.topology.stream_name(Stream::Events);
        wait::until_eq(
            "the EVENTS stream to fill",
            Duration::from_secs(60),
            n,
            || {
                let js = js.clone();
                let name = name.clone();
                async move {
                    match js.get_stream(&name).await {
                        Ok(mut stream) => {
                            stream.info().await.map(|i| i.state.messages).unwrap_or(0)
                        }
                        Err(_) => 0,
                    }
                }
            },
        )
        .await;
    }
}

impl TestApp {
    /// Kills the bridge as a crash would (no goodbye to the broker: its session and the
    /// messages it had not acked stay with the broker).
    pub fn kill_bridge(&mut self) {
        if let Some(task) = self.bridge_task.take() {
            task.abort();
        }
    }

    /// Kills the gateway (API, relay, device supervisor) as a crash would.
    pub fn kill_gateway(&mut self) {
        if let Some(task) = self.gateway_task.take() {
            task.abort();
        }
    }

    /// Starts a new gateway with the same settings (a new port: `base` follows).
    pub async fn start_gateway(&mut self) {
        let gateway = eriop_gateway::App::build_with_clock(
            self.settings.clone(),
            Arc::new(self.clock.clone()),
        )
        .await
        .unwrap()
        .with_device_clock(Arc::new(self.device_clock.clone()));
        self.base = format!("http://127.0.0.1:{}", gateway.port());
        self.relay = gateway.relay_status();
        self.gateway_task = Some(tokio::spawn(async move {
            let _ = gateway.run_until(std::future::pending()).await;
        }));
    }

    /// Stops the projections service, as a crash would: the read models stop moving.
    pub fn stop_projections(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }

    /// Starts a new projections service with the same settings: it catches up from its
    /// checkpoints.
    pub async fn start_projections(&mut self) {
        let projections = eriop_projections::App::build(self.settings.clone())
            .await
            .unwrap();
        self.projections_ops = ops_url(projections.ops_addr());
        self.tasks
            .push(tokio::spawn(projections.run_until(std::future::pending())));
    }

    /// Starts a new bridge with the same settings (same client id: same MQTT session).
    pub async fn start_bridge(&mut self) {
        let bridge = eriop_bridge::Bridge::build(&self.settings).await.unwrap();
        self.bridge = bridge.status();
        self.bridge_ops = ops_url(bridge.ops_addr());
        self.bridge_task = Some(tokio::spawn(bridge.run_until(std::future::pending())));
    }
}

fn ops_url(addr: Option<std::net::SocketAddr>) -> String {
    format!("http://{}", addr.expect("the operations port is bound"))
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.kill_bridge();
        self.kill_gateway();
        for task in &self.tasks {
            task.abort();
        }
        if !self.keep_streams {
            remove_streams(self.settings.nats_url_for_tests(), self.topology.clone());
        }
    }
}

/// Removes a test's streams from the shared nats-server (each reserves its size from the
/// server's store), on a thread of its own: a test's runtime may be ending. Bounded: a
/// private server the test killed is simply not reached.
fn remove_streams(url: String, topology: Topology) {
    let work = move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async move {
            let connect = async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_secs(1))
                .connect(url);
            let Ok(Ok(client)) = tokio::time::timeout(Duration::from_secs(2), connect).await else {
                return;
            };
            let js = jetstream::new(client);
            for which in Stream::ALL {
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    js.delete_stream(topology.stream_name(which)),
                )
                .await;
            }
        });
    };
    let _ = std::thread::spawn(work).join();
}

/// The settings expose the NATS URL as a secret; tests need it in clear.
pub trait NatsUrlForTests {
    fn nats_url_for_tests(&self) -> String;
}

impl NatsUrlForTests for Settings {
    fn nats_url_for_tests(&self) -> String {
        use secrecy::ExposeSecret;
        self.nats_url.expose_secret().to_owned()
    }
}
