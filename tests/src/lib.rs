//! The harness of the end-to-end tests: real PostgreSQL, NATS JetStream, Redis and MQTT,
//! each test isolated in its own database, its own stream/subject prefix and its own Redis
//! key prefix, so the tests run in parallel against shared servers.
//!
//! Where a test must stop a dependency, it gets a private one: its own nats-server process,
//! or a TCP proxy in front of PostgreSQL that it can cut.

pub mod app;
pub mod capture;
pub mod db;
pub mod mosquitto;
pub mod nats_server;
pub mod postgres;
pub mod proxy;
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
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
            )
            .with_test_writer()
            .try_init();
    });
}
