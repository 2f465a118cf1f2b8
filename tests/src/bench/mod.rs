//! `make bench`: ERIOP measured on this machine, as deployed, beside the ceiling of its parts.
//!
//! One deployment on loopback, as the fault suite runs it ([`crate::faults::stack`]): release
//! binaries of the gateway, projections and bridge configured by `ERIOP_*` variables, a
//! private Mosquitto (TLS, 1,000 in flight), a private nats-server (JetStream
//! `sync_interval: always`) and a private PostgreSQL cluster that is durable (`fsync` on,
//! commits flushed) and records commit times. Sections: ingest, API, commands, replay,
//! memory; the report (`docs/BENCHMARKS.md`) is written with the charts beside it.

pub mod api;
pub mod chart;
pub mod fleet;
pub mod ingest;
pub mod procs;
pub mod replay;
pub mod report;
pub mod statements;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::faults::stack::{Nats, Stack, Tuning};
use crate::nats_server::NatsServer;
use procs::Watched;

/// The sections of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Section {
    Ingest,
    Api,
    Commands,
    Replay,
    Memory,
}

/// What to run, and how long.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Only these sections (repeat or comma-separate); all by default.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Section>,
    /// Ingest: virtual lights (one TLS connection each).
    #[arg(long, default_value_t = 200)]
    pub devices: usize,
    /// Ingest: seconds of the saturation run (the issue asks at least 60).
    #[arg(long, default_value_t = 60)]
    pub saturation_seconds: u64,
    /// Ingest: seconds of the broker-alone run.
    #[arg(long, default_value_t = 20)]
    pub ceiling_seconds: u64,
    /// Ingest: the fixed offered rates (messages a second).
    #[arg(long, value_delimiter = ',', default_values_t = [1_000, 5_000, 10_000])]
    pub rates: Vec<u32>,
    /// Ingest: seconds of each fixed-rate run.
    #[arg(long, default_value_t = 20)]
    pub rate_seconds: u64,
    /// API: seconds of each oha run.
    #[arg(long, default_value_t = 15)]
    pub api_seconds: u64,
    /// API: connections of the saturation runs.
    #[arg(long, default_value_t = 64)]
    pub connections: u32,
    /// API: logins to make (argon2id each).
    #[arg(long, default_value_t = 400)]
    pub logins: u32,
    /// Commands: commands of each kind.
    #[arg(long, default_value_t = 3_000)]
    pub commands: usize,
    /// Commands: in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Replay: events in the store to rebuild from.
    #[arg(long, default_value_t = 1_000_000)]
    pub replay_events: i64,
    /// A service variable for this run, over the benchmark's (repeatable), e.g.
    /// `--set ERIOP_BRIDGE_ACTIVITY_INTERVAL_MS=0` to measure a setting's effect.
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_setting)]
    pub settings: Vec<(String, String)>,
    /// A PostgreSQL setting for this run, over the benchmark's (repeatable), e.g.
    /// `--postgres wal_compression=lz4` to measure what a deployment's configuration does.
    #[arg(long = "postgres", value_name = "NAME=VALUE", value_parser = parse_postgres_setting)]
    pub postgres: Vec<String>,
    /// Where the report goes (a full run writes docs/BENCHMARKS.md by default; a partial
    /// run writes nothing unless given).
    #[arg(long)]
    pub report: Option<std::path::PathBuf>,
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if k.starts_with("ERIOP_") => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?}: expected ERIOP_NAME=value")),
    }
}

/// `name=value`, as `postgres -c` takes it: the name a setting's (letters, digits, `_`,
/// `.`), the value one word (letters, digits, `.`, `_`, `:`, `/`, `-`), since `pg_ctl -o`
/// hands the options to a shell.
fn parse_postgres_setting(s: &str) -> Result<String, String> {
    let word = |t: &str, extra: &[u8]| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || extra.contains(&b))
    };
    match s.split_once('=') {
        Some((k, v)) if word(k, b".") && word(v, b".:/-") => Ok(s.to_owned()),
        _ => Err(format!(
            "{s:?}: expected a PostgreSQL setting, name=value (one word, e.g. wal_compression=lz4)"
        )),
    }
}

impl Options {
    fn runs(&self, section: Section) -> bool {
        self.only.is_empty() || self.only.contains(&section)
    }
}

/// Everything a run measured.
#[derive(Default)]
pub struct Results {
    pub ceiling: Option<ingest::Ceiling>,
    pub ingest: Vec<ingest::Run>,
    pub reads: Vec<api::Load>,
    pub logins: Option<api::Load>,
    pub refreshes: Option<api::Load>,
    pub commands: Vec<api::Load>,
    pub replay: Option<replay::Replay>,
    /// PostgreSQL's costliest statements during the saturation run, and all statements' time.
    pub statements: Option<(Vec<statements::Statement>, f64)>,
    /// Resident MiB of each process, idle.
    pub idle: BTreeMap<String, f64>,
}

/// The deployment as configured for the benchmark: production's flow control and
/// durability, and room for the whole run in the streams.
fn tuning(settings: &[(String, String)], postgres: &[String]) -> Tuning {
    let env = [
        ("ERIOP_LOG_LEVEL", "warn".to_owned()),
        // A city's 100,000 lights report once a minute each; the benchmark concentrates
        // that traffic on a few hundred connections, so the per-device limit is lifted.
        ("ERIOP_BRIDGE_DEVICE_MESSAGES_PER_SECOND", "1000000".into()),
        ("ERIOP_BRIDGE_DEVICE_BURST", "1000000".into()),
        ("ERIOP_LOGIN_ATTEMPTS_PER_IP_PER_MINUTE", "1000000".into()),
        // Likewise the agency's telemetry quota (20,000 messages a second, in bursts of a
        // second's worth): the benchmark's one agency is the whole city and more, and a
        // message past the quota is dead-lettered, which would read as sent but not stored.
        ("ERIOP_AGENCY_TELEMETRY_PER_SECOND", "1000000".into()),
        // A known port for the projections' metrics: the ingest runs follow the rows
        // committed there (exact, and at once; PostgreSQL's statistics lag by seconds).
        (
            "ERIOP_PROJECTIONS_OPS_ADDR",
            format!("127.0.0.1:{}", free_port()),
        ),
        (
            "ERIOP_STREAM_TELEMETRY_MAX_BYTES",
            (4_i64 << 30).to_string(),
        ),
        ("ERIOP_STREAM_DEVICE_MAX_BYTES", (1_i64 << 30).to_string()),
        ("ERIOP_STREAM_EVENTS_MAX_BYTES", (1_i64 << 30).to_string()),
        ("ERIOP_STREAM_DLQ_MAX_BYTES", (256_i64 << 20).to_string()),
        (
            "ERIOP_STREAM_COMMANDS_MAX_BYTES",
            (64_i64 << 20).to_string(),
        ),
    ];
    Tuning {
        // Durable as deployed (fsync, synchronous commit: the defaults), sized for the run,
        // and recording commit times for the latencies.
        postgres: vec![
            "fsync=on",
            "synchronous_commit=on",
            "track_commit_timestamp=on",
            "shared_buffers=512MB",
            "max_wal_size=4GB",
            "max_connections=200",
            // Where PostgreSQL's time goes during the saturation run (bench/statements.rs).
            "shared_preload_libraries=pg_stat_statements",
            "pg_stat_statements.track_utility=on",
        ]
        .into_iter()
        .map(str::to_owned)
        .chain(postgres.iter().cloned())
        .collect(),
        env: env
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .chain(settings.iter().cloned())
            .collect(),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("bench: no free port on loopback: {e}"))
}

fn watched(stack: &Stack) -> Vec<Watched> {
    let one = |name: &str, pid: Option<u32>, tree: bool| Watched {
        name: name.to_owned(),
        pid: pid.unwrap_or(0),
        tree,
    };
    let nats = match &stack.nats {
        Nats::Single(server) => server.pid(),
        Nats::Cluster(_) => None,
    };
    vec![
        one("gateway", stack.gateway.pid(), false),
        one("projections", stack.projections.pid(), false),
        one("bridge", stack.bridges[0].pid(), false),
        one("mosquitto", stack.broker.pid(), false),
        one("nats-server", nats, false),
        one("postgresql", stack.postgres.pid(), true),
        one("load generator", Some(std::process::id()), false),
    ]
}

/// Runs the chosen sections; answers what they measured.
pub async fn run(options: &Options) -> Results {
    let mut results = Results::default();
    eprintln!("bench: starting the deployment (release binaries, durable PostgreSQL)...");
    let stack = Stack::start_tuned(
        Nats::Single(NatsServer::start().await),
        1,
        tuning(&options.settings, &options.postgres),
    )
    .await;
    let watched = watched(&stack);

    if options.runs(Section::Memory) {
        // Settled: connections made, first consumers created.
        tokio::time::sleep(Duration::from_secs(5)).await;
        results.idle = watched
            .iter()
            .filter(|w| w.name != "load generator")
            .map(|w| (w.name.clone(), procs::resident_mib(w)))
            .collect();
    }

    let mut device = None;
    if options.runs(Section::Ingest) || options.runs(Section::Api) || options.runs(Section::Memory)
    {
        let agency = ingest::register(&stack, options.devices).await;
        let fleet = fleet::Fleet::connect(
            options.devices,
            ingest::REGISTRY,
            &format!("{}-light", stack.prefix),
            stack.broker.port,
            &stack.broker.ca_file(),
        )
        .await;
        if options.runs(Section::Ingest) {
            results.ceiling = Some(ingest::ceiling(options.devices, options.ceiling_seconds).await);
        }
        if options.runs(Section::Ingest) || options.runs(Section::Memory) {
            let profiled = statements::reset(&stack.db).await;
            let saturation = ingest::run(
                &stack,
                &fleet,
                agency,
                fleet::Offer::Saturate,
                options.saturation_seconds,
                &watched,
            )
            .await;
            if profiled {
                results.statements = Some(statements::read(&stack.db).await);
            }
            results.ingest.push(saturation);
        }
        if options.runs(Section::Ingest) {
            for rate in &options.rates {
                let run = ingest::run(
                    &stack,
                    &fleet,
                    agency,
                    fleet::Offer::Rate(*rate),
                    options.rate_seconds,
                    &watched,
                )
                .await;
                results.ingest.push(run);
            }
        } else {
            // The API reads one device's day: give it one.
            ingest::run(
                &stack,
                &fleet,
                agency,
                fleet::Offer::Rate(1_000),
                5,
                &watched,
            )
            .await;
        }
        let id: uuid::Uuid =
            sqlx::query_scalar("SELECT id FROM devices WHERE registry = $1 AND serial = 'SN-0'")
                .bind(ingest::REGISTRY)
                .fetch_one(&stack.db)
                .await
                .unwrap();
        device = Some(id.to_string());
    }

    if options.runs(Section::Api) {
        let device = device.as_deref().unwrap_or_default();
        api::rolled_up(&stack, device).await;
        results.reads = api::reads(&stack, device, options.api_seconds, options.connections).await;
        let (email, password) = bench_user(&stack).await;
        results.logins = Some(api::logins(&stack, &email, &password, options.logins).await);
        results.refreshes = Some(api::refreshes(&stack, &email, &password, 16, 200).await);
    }
    if options.runs(Section::Commands) || options.runs(Section::Replay) {
        results.commands = api::commands(&stack, options.commands, options.concurrency).await;
    }
    if options.runs(Section::Replay) {
        results.replay = Some(replay::replay(&stack, options.replay_events).await);
    }
    results
}

/// A viewer of the administrator's agency, without MFA, for logins and refreshes.
async fn bench_user(stack: &Stack) -> (String, String) {
    let email = format!("bench.{}@eriop.test", stack.prefix);
    let password = format!("correct horse {} battery staple", stack.prefix);
    let created = stack
        .request(reqwest::Method::POST, "/users")
        .json(&serde_json::json!({
            "email": email, "password": password, "display_name": "Bench user",
            "roles": ["viewer"],
        }))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{:?}", created.text().await);
    (email, password)
}

#[cfg(test)]
mod tests {
    use super::parse_postgres_setting;

    #[test]
    fn a_postgres_setting_is_one_name_and_one_word() {
        for good in [
            "wal_compression=lz4",
            "checkpoint_timeout=30s",
            "max_wal_size=4GB",
        ] {
            assert_eq!(parse_postgres_setting(good).as_deref(), Ok(good));
        }
        for bad in [
            "",
            "x",
            "=on",
            "x=",
            "a b=1",
            "x=1 -c fsync=off",
            "x=$(id)",
            "x=a;b",
        ] {
            assert!(parse_postgres_setting(bad).is_err(), "{bad:?}");
        }
    }
}
