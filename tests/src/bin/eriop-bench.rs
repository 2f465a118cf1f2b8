//! `eriop-bench` (`make bench`): ERIOP measured on this machine as deployed, beside the
//! ceiling of its parts; writes docs/BENCHMARKS.md (see `eriop_tests::bench`).

use std::process::ExitCode;

use clap::Parser;
use eriop_tests::bench::{self, report};

/// Measures ERIOP on this machine: ingest (against the broker alone), API reads, logins and
/// refreshes, the command path, replay and memory, on a deployment of its own (release
/// binaries, private Mosquitto, nats-server and durable PostgreSQL; the machine's Redis).
///
/// Progress goes to stderr; the summary to stdout; a full run (no --only) writes
/// docs/BENCHMARKS.md and its charts. Needs oha for the API section (`make bench` installs
/// it) and the services of `make services`.
#[derive(Parser)]
#[command(about, long_about)]
struct Cli {
    #[command(flatten)]
    options: bench::Options,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    eriop_nats::install_crypto_provider();
    // Stopped (Ctrl-C, SIGTERM): the run is dropped, and with it every process it started.
    tokio::select! {
        code = run(cli) => code,
        () = eriop_nats::shutdown_signal() => {
            eprintln!("bench: stopped; stopping what it started");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> ExitCode {
    let options = cli.options;
    eprintln!("bench: machine: {}", report::machine());
    let results = bench::run(&options).await;
    let command = format!(
        "eriop-bench {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    let path = options.report.clone().or_else(|| {
        options.only.is_empty().then(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/BENCHMARKS.md")
        })
    });
    if let Some(path) = path {
        if let Err(e) = report::write(&path, &options, &results, command.trim()) {
            eprintln!("bench: cannot write the report {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("bench: report written to {}", path.display());
    }
    for load in results
        .reads
        .iter()
        .chain(&results.logins)
        .chain(&results.refreshes)
        .chain(&results.commands)
    {
        println!(
            "{}: {:.0}/s, p50 {:.1} ms, p99 {:.1} ms ({} of {} 2xx)",
            load.label,
            load.per_second,
            load.p50_ms,
            load.p99_ms,
            load.ok(),
            load.total()
        );
    }
    if let Some(r) = &results.replay {
        println!(
            "replay: {} events in {:.1} s = {:.0} events/s",
            r.events, r.seconds, r.per_second
        );
    }
    if let Some((statements, total_ms)) = &results.statements {
        for s in statements.iter().take(5) {
            println!(
                "postgresql at saturation: {:.0}% of statement time, {} calls, {} rows: {}",
                100.0 * s.total_ms / total_ms.max(1e-9),
                s.calls,
                s.rows,
                s.query.chars().take(100).collect::<String>()
            );
        }
    }
    for (name, mib) in &results.idle {
        println!("memory idle: {name} {mib:.1} MiB");
    }
    if let Some(saturation) = results.ingest.iter().find(|r| r.offered.is_none()) {
        for r in &results.ingest {
            println!(
                "ingest {}: {:.0} msg/s, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms, sent={} stored={}",
                r.label,
                r.per_second(),
                r.percentile(0.5),
                r.percentile(0.99),
                r.percentile(1.0),
                r.sent,
                r.stored
            );
        }
        // The one line, last.
        println!(
            "{}",
            report::ingest_line(saturation, results.ceiling.as_ref())
        );
    }
    ExitCode::SUCCESS
}
