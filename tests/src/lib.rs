//! The harness of the end-to-end tests: real PostgreSQL, NATS JetStream, Redis and MQTT,
//! each test isolated in its own database, its own stream/subject prefix and its own Redis
//! key prefix, so the tests run in parallel against shared servers.
//!
//! Where a test must stop a dependency, it gets a private one: its own nats-server process,
//! or a TCP proxy in front of PostgreSQL that it can cut.

pub mod app;
pub mod bench;
pub mod capture;
pub mod db;
pub mod faults;
pub mod mosquitto;
pub mod nats_server;
pub mod otlp;
pub mod postgres;
pub mod proxy;
pub mod service;
pub mod totp;
pub mod wait;

pub use app::TestApp;
pub use db::TestDb;
pub use nats_server::NatsServer;
pub use proxy::TcpProxy;

use std::sync::Once;

/// The shared current nats-server that `make test` starts (`scripts/services.sh`).
pub fn nats_url() -> String {
    std::env::var("ERIOP_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4223".into())
}

/// A fresh lower-case prefix for NATS streams and subjects, Redis keys, ...
pub fn unique_prefix() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Process-wide set-up: TLS provider and logs (shown for failing tests only).
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        eriop_nats::install_crypto_provider();
        use tracing_subscriber::layer::{Layer, SubscriberExt};
        use tracing_subscriber::util::SubscriberInitExt;
        let filter = || {
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"))
        };
        // `make test` also keeps every log line the services write, as JSON, one file per
        // test process, and scans them all for personal data and secrets at the end
        // (scripts/scan-logs.py).
        let file = std::env::var_os("ERIOP_TEST_LOG_DIR").and_then(|dir| {
            std::fs::File::create(
                std::path::Path::new(&dir).join(format!("{}.log", std::process::id())),
            )
            .ok()
        });
        let to_file = file.map(|file| {
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::sync::Mutex::new(file))
                .with_filter(filter())
        });
        let _ = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_test_writer()
                    .with_filter(filter()),
            )
            .with(to_file)
            .try_init();
    });
}
