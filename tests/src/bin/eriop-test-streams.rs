//! `eriop-test-streams`: removes the JetStream streams that tests left on the shared
//! development nats-server (names `T{12 hex}_...`, from `eriop_tests::unique_prefix`).
//! Each test removes its own streams when its `TestApp` is dropped; a test that crashed, or a
//! run that was cut short, leaves them. `make test` runs this before the tests: a stream
//! reserves its size from the server's store, so leftovers would end by refusing new ones. A
//! deployment's streams (no prefix) are never touched.

use std::process::ExitCode;

use clap::Parser;
use futures::TryStreamExt;

/// Removes streams left by earlier test runs on the development nats-server.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The server (default: ERIOP_TEST_NATS_URL, else nats://127.0.0.1:4223).
    #[arg(long)]
    url: Option<String>,
}

fn is_test_stream(name: &str) -> bool {
    let Some((prefix, _)) = name.split_once('_') else {
        return false;
    };
    prefix.len() == 13
        && prefix.starts_with('T')
        && prefix[1..].chars().all(|c| c.is_ascii_hexdigit())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let url = cli.url.unwrap_or_else(eriop_tests::nats_url);
    let client = match async_nats::connect(&url).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "eriop-test-streams: cannot reach {url} ({e}): start it with `make services`"
            );
            return ExitCode::FAILURE;
        }
    };
    let js = async_nats::jetstream::new(client);
    let names: Vec<String> = match js.stream_names().try_collect().await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("eriop-test-streams: cannot list streams ({e})");
            return ExitCode::FAILURE;
        }
    };
    let stale: Vec<&String> = names.iter().filter(|n| is_test_stream(n)).collect();
    let mut removed = 0;
    for name in &stale {
        if js.delete_stream(name.as_str()).await.is_ok() {
            removed += 1;
        }
    }
    eprintln!(
        "eriop-test-streams: removed {removed} of {} streams left by earlier test runs",
        stale.len()
    );
    ExitCode::SUCCESS
}
