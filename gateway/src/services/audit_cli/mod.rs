//! `eriop-audit`: the auditors' command line. `verify FILE` checks an export alone (no
//! database, no network); `tail` and `replay` read the `EVENTS` stream from NATS
//! ([`follow`]). The binary (`src/bin/eriop-audit.rs`) only calls [`run`], which the tests
//! call too.

mod follow;
pub use follow::INBOX_PREFIX;

use std::io::{BufRead, Write};
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use jsonwebtoken::jwk::JwkSet;

use super::export::Verifier;

#[derive(Parser)]
#[command(
    name = "eriop-audit",
    about = "Check ERIOP's audit trail from outside",
    long_about = "Check ERIOP's audit trail from outside.\n\n\
        Take an export with GET /api/v1/audit/export?from=&to= (needs audit:read), and the \
        gateway's public keys from /.well-known/jwks.json, then: eriop-audit verify FILE --jwks KEYS"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check an export offline: every event's hash, every chain, the end line's totals and
    /// digest, and its signature when the public keys are given. Names the first bad line.
    Verify {
        /// The export (NDJSON), `-` for standard input.
        file: PathBuf,
        /// The gateway's public keys (the JSON of /.well-known/jwks.json), to check the
        /// signature; without them the signature is not checked.
        #[arg(long)]
        jwks: Option<PathBuf>,
    },
    /// Follow EVENTS from now (or --since, --from-sequence): one JSON line per event,
    /// `{"stream_sequence", "subject", "event"}`, until interrupted.
    Tail(follow::Follow),
    /// Read EVENTS from the start (or --since, --from-sequence) to its end as of now, one JSON
    /// line per event, then stop.
    Replay(follow::Follow),
}

/// Runs the command line `args` (the program's name first). Exit codes: 0 done (for
/// `verify`: the export holds), 1 it does not hold or NATS failed, 2 a usage error or an
/// unreadable file.
pub async fn run(
    args: impl IntoIterator<Item = String>,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> u8 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to standard output and succeed.
            if e.use_stderr() {
                let _ = write!(err, "{e}");
                return 2;
            }
            let _ = write!(out, "{e}");
            return 0;
        }
    };
    match cli.command {
        Command::Verify { file, jwks } => verify(&file, jwks.as_deref(), out, err),
        Command::Tail(args) => follow::follow(args, false, out, err).await,
        Command::Replay(args) => follow::follow(args, true, out, err).await,
    }
}

fn verify(
    file: &std::path::Path,
    jwks: Option<&std::path::Path>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let keys: Option<JwkSet> = match jwks.map(|path| {
        std::fs::read(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
            .and_then(|bytes| {
                serde_json::from_slice(&bytes).map_err(|e| {
                    format!(
                        "{} is not a JWK set (/.well-known/jwks.json): {e}",
                        path.display()
                    )
                })
            })
    }) {
        None => None,
        Some(Ok(keys)) => Some(keys),
        Some(Err(e)) => {
            let _ = writeln!(err, "eriop-audit: {e}");
            return 2;
        }
    };
    let reader: Box<dyn BufRead> = if file.as_os_str() == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        match std::fs::File::open(file) {
            Ok(f) => Box::new(std::io::BufReader::new(f)),
            Err(e) => {
                let _ = writeln!(err, "eriop-audit: cannot open {}: {e}", file.display());
                return 2;
            }
        }
    };
    let name = file.display();
    let mut verifier = Verifier::new();
    for line in reader.split(b'\n') {
        let checked = match line {
            Err(e) => {
                let _ = writeln!(err, "eriop-audit: cannot read {name}: {e}");
                return 2;
            }
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => verifier.line(&text),
                Err(_) => {
                    let _ = writeln!(err, "{name}: line {}: not UTF-8", verifier.lines() + 1);
                    return 1;
                }
            },
        };
        if let Err(bad) = checked {
            let _ = writeln!(err, "{name}: {bad}");
            return 1;
        }
        // Operators see a long check move.
        if verifier.lines().is_multiple_of(100_000) {
            let _ = writeln!(err, "eriop-audit: {} lines checked", verifier.lines());
        }
    }
    match verifier.finish(keys.as_ref()) {
        Err(bad) => {
            let _ = writeln!(err, "{name}: {bad}");
            1
        }
        Ok(report) => {
            let signature = if report.signature_checked {
                "signature checked"
            } else {
                "signature NOT checked (give --jwks with the gateway's /.well-known/jwks.json)"
            };
            let _ = writeln!(
                out,
                "{name}: verified: {} events in {} chains, {} redacted (covered by their chains and the signature); {signature}",
                report.events, report.chains, report.redacted
            );
            0
        }
    }
}
