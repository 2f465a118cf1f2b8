//! The plumbing every ERIOP service shares.
//!
//! DESIGN.md fixes the top level of the workspace, and `nats/` is the one crate that every
//! service depends on besides `domain`. So besides the JetStream streams as code (its first
//! job) it carries the few other things all three services must do identically:
//! configuration, logging, retry backoff, the start-up of TLS, and the operations port
//! (metrics and health) of the services without an API.

pub mod backoff;
pub mod config;
pub mod connect;
pub mod db;
pub mod dlq;
pub mod envelope;
pub mod error;
pub mod links;
pub mod logging;
pub mod metrics;
pub mod otel;
pub mod progress;
pub mod schemas;
pub mod streams;
pub mod traffic;

pub use config::Settings;
pub use envelope::StoredEvent;
pub use error::NatsError;
pub use streams::{Stream, Topology};

/// Several crates in the tree (sqlx, async-nats, rumqttc) bring rustls, and rustls panics
/// when more than one crypto provider is compiled in and none was chosen. Every binary
/// calls this first; calling it twice is harmless.
pub fn install_crypto_provider() {
    // An error only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A panic anywhere ends the process: no task may die silently while the others go on
/// (a dead pipeline behind a live MQTT link would look healthy). The hook writes one error
/// line (where, not what: a panic message may quote input), lets the default hook print the
/// panic to stderr, and exits with status 101; `make run`, Docker or Kubernetes restart it.
pub fn exit_on_panic(program: &'static str) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        tracing::error!(
            program,
            %location,
            thread = thread.name().unwrap_or("unnamed"),
            "a task panicked: the process stops so that it is restarted whole"
        );
        default(info);
        std::process::exit(101);
    }));
}

/// The start of every ERIOP binary: TLS provider, settings, logging (and span export when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set, see [`otel`]), and a panic in any task
/// ends the process ([`exit_on_panic`]). On a configuration error it prints what to fix,
/// prefixed by the program's name, and answers `None`.
pub fn start_service(program: &'static str) -> Option<Settings> {
    install_crypto_provider();
    exit_on_panic(program);
    let started = Settings::load()
        .map_err(|e| e.to_string())
        .and_then(|settings| {
            let otlp = otel::OtlpSettings::from_env(program).map_err(|e| e.to_string())?;
            logging::init(settings.log_format, &settings.log_level, otlp.as_ref())
                .map_err(|e| e.to_string())?;
            Ok(settings)
        });
    match started {
        Ok(settings) => Some(settings),
        Err(e) => {
            eprintln!("{program}: {e}");
            None
        }
    }
}

/// The end of every ERIOP service: the spans still queued go to the collector.
pub fn stop_service() {
    logging::flush();
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM (what `docker stop` sends).
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
}
