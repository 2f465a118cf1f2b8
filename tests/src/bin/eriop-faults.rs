//! `eriop-faults`: the fault suite (`make test-faults`). See `eriop_tests::faults`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use eriop_tests::faults::stack::{Nats, Stack, Target};
use eriop_tests::faults::{check, Run, Timing};
use eriop_tests::nats_server::{NatsCluster, NatsServer};

/// Kills every part of an ERIOP deployment on loopback, one at a time and two at once, under
/// steady load, and checks that nothing accepted was lost or stored twice.
///
/// Starts its own PostgreSQL cluster (initdb), nats-server (then a 3-node JetStream cluster),
/// TLS Mosquitto, and the gateway, projections and bridge binaries built beside it (make
/// test-faults builds them). Prints one line per step and a table at the end; exits 1 when a
/// row shows a duplicate, a loss, or a service that did not recover by itself. Logs of a run
/// are kept with ERIOP_FAULTS_KEEP_LOGS=1.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// Simulated street lights.
    #[arg(long, default_value_t = 8)]
    lights: usize,
    /// `states` messages per second of each light (QoS 1).
    #[arg(long, default_value_t = 5)]
    rate: u32,
    /// Seconds of load before each fault.
    #[arg(long, default_value_t = 4)]
    before: u64,
    /// Seconds the killed components stay down.
    #[arg(long, default_value_t = 4)]
    down: u64,
    /// Seconds of load after recovery.
    #[arg(long, default_value_t = 3)]
    after: u64,
    /// Run only the faults whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// Skip the scale-out runs (3-node NATS cluster, two bridges).
    #[arg(long)]
    no_cluster: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Stopped (Ctrl-C, SIGTERM): the run is dropped, and with it every process it started.
    tokio::select! {
        code = run(cli) => code,
        () = eriop_nats::shutdown_signal() => {
            eprintln!("faults: stopped; stopping what it started");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> ExitCode {
    eriop_nats::install_crypto_provider();
    let timing = Timing {
        before: Duration::from_secs(cli.before),
        down: Duration::from_secs(cli.down),
        after: Duration::from_secs(cli.after),
        recover_within: Duration::from_secs(90),
        settle_within: Duration::from_secs(60),
    };
    let wanted = |name: &str| cli.only.as_deref().is_none_or(|o| name.contains(o));
    let single: Vec<(&str, Vec<Target>)> = vec![
        ("broker", vec![Target::Broker]),
        ("nats", vec![Target::Nats]),
        ("postgres", vec![Target::Postgres]),
        ("bridge", vec![Target::Bridge(0)]),
        ("projections", vec![Target::Projections]),
        ("gateway", vec![Target::Gateway]),
        ("bridge + nats", vec![Target::Bridge(0), Target::Nats]),
        (
            "postgres + projections",
            vec![Target::Postgres, Target::Projections],
        ),
    ];
    let cluster: Vec<(&str, Vec<Target>)> = vec![
        ("nats node 1 of 3 (3 replicas)", vec![Target::NatsNode(0)]),
        ("bridge 2 of 2 (shared subs)", vec![Target::Bridge(1)]),
    ];
    let started = std::time::Instant::now();
    let mut rows = Vec::new();
    if single.iter().any(|(n, _)| wanted(n)) {
        eprintln!("faults: starting a deployment (PostgreSQL, nats-server, Mosquitto, gateway, projections, bridge)");
        let stack = Stack::start(Nats::Single(NatsServer::start().await), 1).await;
        let mut run = Run::start(stack, cli.lights, cli.rate).await;
        for (name, targets) in single.iter().filter(|(n, _)| wanted(n)) {
            rows.push(run.fault(name, targets, &timing).await);
        }
    }
    if !cli.no_cluster && cluster.iter().any(|(n, _)| wanted(n)) {
        eprintln!("faults: starting a deployment on a 3-node JetStream cluster with two bridges");
        let stack = Stack::start(Nats::Cluster(NatsCluster::start(3).await), 2).await;
        let mut run = Run::start(stack, cli.lights, cli.rate).await;
        for (name, targets) in cluster.iter().filter(|(n, _)| wanted(n)) {
            rows.push(run.fault(name, targets, &timing).await);
        }
    }
    check::print_table(&rows);
    let failed = rows.iter().filter(|r| !r.passed()).count();
    println!(
        "faults: {} of {} faults survived with nothing lost or doubled, in {:.0} s",
        rows.len() - failed,
        rows.len(),
        started.elapsed().as_secs_f64()
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
