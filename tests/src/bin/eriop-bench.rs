//! `eriop-bench`: measures ERIOP end to end on this machine, against the real services, with
//! the gateway and projections built in-process on a fresh database and NATS prefix.
//!
//! Commands: `POST /api/v1/agencies` answered after the read model shows the agency (so each
//! one travels aggregate, event store, relay, JetStream, projection); logins (argon2id-bound).

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
    let app = TestApp::spawn_with(TestDb::migrated().await, |s| {
        // The benchmark measures, it does not get throttled.
        s.login_attempts_per_ip_per_minute = u32::MAX;
        s.log_level = "warn".into();
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
}
