//! A whole ERIOP deployment on loopback that the fault suite may kill piece by piece: a
//! private PostgreSQL cluster (initdb), a private nats-server or 3-node JetStream cluster, a
//! private TLS Mosquitto, and the gateway, projections and bridge(s) as processes of their
//! own, configured by environment variables as in a deployment. Redis is the machine's,
//! under a key prefix of this run.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::mosquitto::{free_port, Broker};
use crate::nats_server::{NatsCluster, NatsServer};
use crate::postgres::PrivatePostgres;
use crate::service::Service;
use crate::{unique_prefix, wait};

pub enum Nats {
    Single(NatsServer),
    Cluster(NatsCluster),
}

impl Nats {
    pub fn urls(&self) -> String {
        match self {
            Nats::Single(server) => server.url(),
            Nats::Cluster(cluster) => cluster.urls(),
        }
    }

    fn replicas(&self) -> usize {
        match self {
            Nats::Single(_) => 1,
            Nats::Cluster(cluster) => cluster.len(),
        }
    }
}

/// What a fault kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Broker,
    Nats,
    /// One node of the cluster.
    NatsNode(usize),
    Postgres,
    /// One bridge (of one, or of a shared-subscription group).
    Bridge(usize),
    Projections,
    Gateway,
}

impl Target {
    pub fn label(self) -> String {
        match self {
            Target::Broker => "broker".into(),
            Target::Nats => "nats".into(),
            Target::NatsNode(i) => format!("nats node {}", i + 1),
            Target::Postgres => "postgres".into(),
            Target::Bridge(0) => "bridge".into(),
            Target::Bridge(i) => format!("bridge {}", i + 1),
            Target::Projections => "projections".into(),
            Target::Gateway => "gateway".into(),
        }
    }
}

/// What a run changes of the deployment the fault suite uses: the benchmark's durable
/// PostgreSQL, bigger streams, its log level.
#[derive(Default)]
pub struct Tuning {
    /// PostgreSQL server settings (`name=value`); empty: the tests' (fsync off).
    pub postgres: Vec<String>,
    /// `ERIOP_*` variables of every service, over the suite's own.
    pub env: Vec<(String, String)>,
}

pub struct Stack {
    pub postgres: PrivatePostgres,
    pub nats: Nats,
    pub broker: Broker,
    pub gateway: Service,
    pub projections: Service,
    pub bridges: Vec<Service>,
    /// The database, as its superuser (the checks read every agency's rows).
    pub db: PgPool,
    pub api: String,
    pub http: reqwest::Client,
    pub token: String,
    pub prefix: String,
    pub logs: PathBuf,
    /// Every service's `ERIOP_*` variables (the suite's, then the tuning's).
    pub env: Vec<(String, String)>,
    /// Keep the services' logs when the stack stops (a fault failed, or
    /// ERIOP_FAULTS_KEEP_LOGS is set): a failure in CI must be readable afterwards.
    pub keep_logs: bool,
    _logs: tempfile::TempDir,
}

impl Stack {
    /// Starts everything; `bridges` bridges (more than one: a shared-subscription group).
    pub async fn start(nats: Nats, bridges: usize) -> Self {
        Self::start_tuned(nats, bridges, Tuning::default()).await
    }

    /// [`Self::start`], changed by `tuning`.
    pub async fn start_tuned(nats: Nats, bridges: usize, tuning: Tuning) -> Self {
        let postgres = if tuning.postgres.is_empty() {
            PrivatePostgres::start()
        } else {
            PrivatePostgres::start_with(
                &tuning
                    .postgres
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>(),
            )
        };
        let admin = PgPool::connect(&postgres.url("postgres")).await.unwrap();
        sqlx::query("CREATE DATABASE eriop")
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let database_url = postgres.url("eriop");
        let db = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect(&database_url)
            .await
            .unwrap();
        eriop_migrations::up(&db).await.unwrap();
        let broker = Broker::start_tls();
        let prefix = unique_prefix();
        let logs_dir = tempfile::tempdir().unwrap();
        let logs = logs_dir.path().to_path_buf();
        let http_port = free_port();
        let secret = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let common: Vec<(&str, String)> = vec![
            ("ERIOP_PROFILE", "development".into()),
            ("ERIOP_DATABASE_URL", database_url.clone()),
            ("ERIOP_NATS_URL", nats.urls()),
            ("ERIOP_NATS_PREFIX", prefix.clone()),
            ("ERIOP_STREAM_REPLICAS", nats.replicas().to_string()),
            ("ERIOP_REDIS_URL", "redis://127.0.0.1:6379".into()),
            ("ERIOP_REDIS_KEY_PREFIX", format!("{prefix}:")),
            ("ERIOP_SECRET_KEY", secret),
            ("ERIOP_HTTP_ADDR", format!("127.0.0.1:{http_port}")),
            // Several bridges on one machine: any free operations port each.
            ("ERIOP_BRIDGE_OPS_ADDR", "127.0.0.1:0".into()),
            ("ERIOP_PROJECTIONS_OPS_ADDR", "127.0.0.1:0".into()),
            ("ERIOP_MQTT_BROKER_HOST", "127.0.0.1".into()),
            ("ERIOP_MQTT_BROKER_PORT", broker.port.to_string()),
            ("ERIOP_MQTT_USE_TLS", "true".into()),
            ("ERIOP_MQTT_CA_FILE", broker.ca_file().display().to_string()),
            ("ERIOP_PLATFORM_ADMINS_NEED_MFA", "false".into()),
            // One load generator, one address, one user: far above a person's rate.
            ("ERIOP_RATE_LIMIT_PER_USER", "1000000".into()),
            ("ERIOP_RATE_LIMIT_PER_AGENCY", "1000000".into()),
            ("ERIOP_RATE_LIMIT_PER_ADDRESS", "1000000".into()),
            ("ERIOP_ACCESS_TOKEN_EXPIRE_MINUTES", "240".into()),
            ("ERIOP_LOG_FORMAT", "json".into()),
            (
                "ERIOP_LOG_LEVEL",
                std::env::var("ERIOP_FAULTS_LOG_LEVEL").unwrap_or_else(|_| "info".into()),
            ),
            // Small streams: what one run holds, and a cluster's three copies fit easily.
            ("ERIOP_STREAM_EVENTS_MAX_BYTES", (64 << 20).to_string()),
            ("ERIOP_STREAM_TELEMETRY_MAX_BYTES", (128 << 20).to_string()),
            ("ERIOP_STREAM_DEVICE_MAX_BYTES", (64 << 20).to_string()),
            ("ERIOP_STREAM_COMMANDS_MAX_BYTES", (16 << 20).to_string()),
            ("ERIOP_STREAM_DLQ_MAX_BYTES", (16 << 20).to_string()),
        ];
        let service = |name: &str, binary: &str, args: &[&str]| {
            let mut s = Service::new(name, binary, args, &logs);
            for (k, v) in &common {
                s.env(k, v.clone());
            }
            for (k, v) in &tuning.env {
                s.env(k, v.clone());
            }
            s
        };
        let mut gateway = service("gateway", "eriop-gateway", &[]);
        let mut projections = service("projections", "eriop-projections", &["run"]);
        let mut group = Vec::new();
        for i in 0..bridges {
            let mut bridge = service(&format!("bridge-{}", i + 1), "eriop-bridge", &[]);
            bridge.env("ERIOP_MQTT_CLIENT_ID", format!("{prefix}-bridge-{}", i + 1));
            if bridges > 1 {
                bridge.env("ERIOP_MQTT_SHARE_GROUP", format!("{prefix}-bridges"));
            }
            group.push(bridge);
        }

        // The first platform administrator, by the command an operator runs.
        let email = format!("faults.{prefix}@eriop.test");
        let password = format!("correct horse {prefix} staple");
        let password_file = logs.join("admin-password");
        std::fs::write(&password_file, &password).unwrap();
        let mut bootstrap = service(
            "bootstrap",
            "eriop-gateway",
            &[
                "bootstrap-admin",
                "--email",
                &email,
                "--password-file",
                &password_file.display().to_string(),
            ],
        );
        assert!(
            bootstrap.exists(),
            "the service binaries are missing beside {}: run `make test-faults` (it builds them)",
            std::env::current_exe().unwrap().display()
        );
        bootstrap.start();
        let done = wait::until("bootstrap-admin", Duration::from_secs(60), || {
            let done = bootstrap.exited();
            async move { done }
        })
        .await;
        assert!(
            done.ends_with("exit status: 0"),
            "{done}; see {}",
            bootstrap.log_path().display()
        );

        gateway.start();
        projections.start();
        for bridge in &mut group {
            bridge.start();
        }
        let mut stack = Self {
            postgres,
            nats,
            broker,
            gateway,
            projections,
            bridges: group,
            db,
            api: format!("http://127.0.0.1:{http_port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            token: String::new(),
            prefix,
            logs,
            env: common
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .chain(tuning.env.iter().cloned())
                .collect(),
            keep_logs: std::env::var_os("ERIOP_FAULTS_KEEP_LOGS").is_some(),
            _logs: logs_dir,
        };
        stack.await_ready(Duration::from_secs(120)).await;
        stack.token = stack.login(&email, &password).await;
        stack
    }

    /// Another process of the deployment (a one-off command), configured as its services.
    pub fn service(&self, name: &str, binary: &str, args: &[&str]) -> Service {
        let mut s = Service::new(name, binary, args, &self.logs);
        for (k, v) in &self.env {
            s.env(k, v.clone());
        }
        s
    }

    /// An access token of `email` (asserting a login without MFA).
    pub async fn login(&self, email: &str, password: &str) -> String {
        let login: Value = self
            .http
            .post(self.url("/auth/login"))
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        login["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("login of {email}: {login}"))
            .to_owned()
    }

    /// A request as the administrator; answers its JSON body and the `field` it must have.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        field: &str,
    ) -> String {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer[field]
            .as_str()
            .unwrap_or_else(|| panic!("{path}: no {field} in {answer}"))
            .to_owned()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.api)
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(&self.token)
    }

    /// Whether readiness answers 200 (PostgreSQL, Redis, NATS and the MQTT link all up).
    pub async fn ready(&self) -> bool {
        match self
            .http
            .get(format!("{}/health/ready", self.api))
            .send()
            .await
        {
            Ok(r) => r.status() == 200,
            Err(_) => false,
        }
    }

    pub async fn await_ready(&mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while !self.ready().await {
            if let Some(exit) = self.exited() {
                panic!("{exit}; see {}", self.logs.display());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "readiness did not answer 200 within {within:?}; logs in {}",
                self.logs.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A service that exited on its own (none should: they ride out every outage).
    pub fn exited(&mut self) -> Option<String> {
        let mut all = vec![&mut self.gateway, &mut self.projections];
        all.extend(self.bridges.iter_mut());
        all.into_iter().find_map(Service::exited)
    }

    pub async fn kill(&mut self, target: Target) {
        match target {
            Target::Broker => self.broker.kill(),
            Target::Nats => match &mut self.nats {
                Nats::Single(server) => server.stop(),
                Nats::Cluster(_) => panic!("kill one node of a cluster"),
            },
            Target::NatsNode(i) => match &mut self.nats {
                Nats::Cluster(cluster) => cluster.node(i).stop(),
                Nats::Single(_) => panic!("no cluster"),
            },
            Target::Postgres => self.postgres.kill(),
            Target::Bridge(i) => self.bridges[i].kill(),
            Target::Projections => self.projections.kill(),
            Target::Gateway => self.gateway.kill(),
        }
    }

    pub async fn restart(&mut self, target: Target) {
        match target {
            Target::Broker => self.broker.start(),
            Target::Nats => match &mut self.nats {
                Nats::Single(server) => server.resume().await,
                Nats::Cluster(_) => unreachable!(),
            },
            Target::NatsNode(i) => match &mut self.nats {
                Nats::Cluster(cluster) => cluster.node(i).resume().await,
                Nats::Single(_) => unreachable!(),
            },
            Target::Postgres => self.postgres.resume(),
            Target::Bridge(i) => self.bridges[i].start(),
            Target::Projections => self.projections.start(),
            Target::Gateway => self.gateway.start(),
        }
    }

    /// A device class of street lights, the registry `faults` of the administrator's agency
    /// and `n` lights in it: their ERIOP ids, by serial.
    pub async fn register_lights(&self, n: usize) -> Vec<(String, String)> {
        let class = json!({
            "name": "Street light",
            "offline_after_secs": 600,
            "functions": [
                {"id": "lampMonitor001", "type": "LampMonitorFunction"},
                {"id": "lampActuator001", "type": "LampActuatorFunction"},
                {"id": "comm001", "type": "CommunicationFunction"},
            ],
        });
        let class = self
            .call(Method::POST, "/device-classes", Some(class), "id")
            .await;
        // A create may answer 202 (stored, the read model not there yet): registration
        // checks the class and the registry in the read models, so wait for them.
        self.await_shown(&format!("/device-classes/{class}")).await;
        let agency = self.call(Method::GET, "/auth/me", None, "agency_id").await;
        let assigned = self
            .request(Method::POST, "/registries")
            .json(&json!({ "registry": "faults", "agency_id": agency }))
            .send()
            .await
            .unwrap();
        assert!(
            assigned.status().is_success(),
            "{:?}",
            assigned.text().await
        );
        self.await_shown("/registries/faults").await;
        let mut lights = Vec::new();
        for i in 1..=n {
            let serial = format!("FAULT-{i:03}");
            let device = json!({"class_id": class, "registry": "faults", "serial": serial, "name": format!("Pole {i}")});
            let id = self
                .call(Method::POST, "/devices", Some(device), "id")
                .await;
            lights.push((serial, id));
        }
        // The bridge and device commands find devices in the read model.
        for (_, id) in &lights {
            self.await_shown(&format!("/devices/{id}")).await;
        }
        lights
    }

    /// Waits until `GET path` answers 200 (the read model shows what was stored).
    pub async fn await_shown(&self, path: &str) {
        wait::until(path, Duration::from_secs(60), || async {
            let r = self.request(Method::GET, path).send().await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
    }

    /// The MQTT options of a simulated device's connection `client_id` to the broker.
    pub fn device_options(&self, client_id: &str) -> rumqttc::v5::MqttOptions {
        let mut settings = eriop_nats::Settings::development().unwrap();
        settings.mqtt_broker_host = "127.0.0.1".into();
        settings.mqtt_broker_port = self.broker.port;
        settings.mqtt_use_tls = true;
        settings.mqtt_ca_file = Some(self.broker.ca_file());
        settings.mqtt_client_id = format!("{}-{client_id}", self.prefix);
        let mut options = eriop_bridge::mqtt_options(&settings).unwrap();
        options.set_manual_acks(false);
        options
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Services first, while what they use still answers.
        self.gateway.kill();
        self.projections.kill();
        for bridge in &mut self.bridges {
            bridge.kill();
        }
        if self.keep_logs {
            let kept = std::env::temp_dir().join(format!("eriop-faults-{}", self.prefix));
            let _ = std::fs::create_dir_all(&kept);
            for entry in std::fs::read_dir(&self.logs)
                .into_iter()
                .flatten()
                .flatten()
            {
                let _ = std::fs::copy(entry.path(), kept.join(entry.file_name()));
            }
            eprintln!("faults: logs kept in {}", kept.display());
        }
    }
}
