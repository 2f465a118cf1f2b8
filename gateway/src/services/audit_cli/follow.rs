//! `eriop-audit tail` and `replay`: the `EVENTS` stream as one JSON line per event, for
//! auditors and integrations subscribed to NATS. An ordered consumer (ephemeral, no acks,
//! recreated by the client on a gap) reads from now, from a time or from a stream sequence;
//! `replay` stops at the stream's last message as it was at the start, `tail` follows.
//!
//! The auditor's NATS user may read `EVENTS` and nothing else (deploy/nats/nats-server.conf):
//! its replies come on its own inbox prefix, `_INBOX_auditor`, never the shared `_INBOX.>`
//! where other services' pull replies (telemetry among them) travel.

use std::io::Write;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use serde_json::value::RawValue;

use eriop_nats::{Stream, Topology};

/// Where the auditor's NATS user gets its replies (its permissions allow only this).
pub const INBOX_PREFIX: &str = "_INBOX_auditor";

#[derive(clap::Args)]
pub struct Follow {
    /// NATS servers (comma-separated).
    #[arg(long, env = "ERIOP_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// The NATS user (the deployment's is `auditor`); none: connect without a user.
    #[arg(long, env = "ERIOP_AUDIT_NATS_USER")]
    user: Option<String>,
    /// A file holding the user's password (a secret is never an argument: it would show in
    /// the process list); or the environment variable ERIOP_AUDIT_NATS_PASSWORD.
    #[arg(long)]
    password_file: Option<std::path::PathBuf>,
    /// The deployment's stream prefix (ERIOP_NATS_PREFIX), empty in production.
    #[arg(long, env = "ERIOP_NATS_PREFIX", default_value = "")]
    prefix: String,
    /// Only the events of one aggregate type (`agency`, `user`, `device`, ...).
    #[arg(long)]
    aggregate_type: Option<String>,
    /// Start at the first event published at or after this time (RFC 3339).
    #[arg(long, conflicts_with = "from_sequence")]
    since: Option<DateTime<Utc>>,
    /// Start at this stream sequence (each line names its `stream_sequence`, so a reader
    /// resumes after the last it kept).
    #[arg(long)]
    from_sequence: Option<u64>,
}

/// Reads `EVENTS` and writes one line per event to `out`: `{"stream_sequence", "subject",
/// "event"}`. `until_end`: stop at the stream's last message as of the start (replay).
/// Answers the exit code.
pub async fn follow(
    args: Follow,
    until_end: bool,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> u8 {
    match run(args, until_end, out, err).await {
        Ok(()) => 0,
        Err(message) => {
            let _ = writeln!(err, "eriop-audit: {message}");
            1
        }
    }
}

async fn run(
    args: Follow,
    until_end: bool,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> Result<(), String> {
    let password = match (
        &args.password_file,
        std::env::var("ERIOP_AUDIT_NATS_PASSWORD"),
    ) {
        (Some(path), _) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the password file {}: {e}", path.display()))?
                .trim_end()
                .to_owned(),
        ),
        (None, Ok(password)) => Some(password),
        (None, Err(_)) => None,
    };
    let mut options = async_nats::ConnectOptions::new()
        .name("eriop-audit")
        .custom_inbox_prefix(INBOX_PREFIX)
        .connection_timeout(Duration::from_secs(5));
    if let Some(user) = args.user.clone() {
        let password = password.ok_or(
            "give the NATS user's password in ERIOP_AUDIT_NATS_PASSWORD or --password-file",
        )?;
        options = options.user_and_password(user, password);
    }
    let servers =
        eriop_nats::connect::servers(&args.nats_url).map_err(|e| format!("--nats-url: {e}"))?;
    let client = options.connect(servers).await.map_err(|e| {
        format!(
            "cannot reach NATS at {}: {e} (check --nats-url and the credentials)",
            args.nats_url
        )
    })?;
    let js = eriop_nats::connect::jetstream(client, Duration::from_secs(5));
    let topology = Topology::new(&args.prefix);
    let name = topology.stream_name(Stream::Events);
    let mut stream = js.get_stream(&name).await.map_err(|e| {
        format!(
            "cannot read the stream {name}: {e} (is --prefix right? may this user read EVENTS?)"
        )
    })?;
    let last = stream
        .info()
        .await
        .map_err(|e| format!("stream {name}: {e}"))?
        .state
        .last_sequence;
    let deliver_policy = match (args.since, args.from_sequence) {
        (_, Some(start_sequence)) => DeliverPolicy::ByStartSequence { start_sequence },
        (Some(since), None) => serde_json::from_value(serde_json::json!({
            "deliver_policy": "by_start_time",
            "opt_start_time": since.to_rfc3339_opts(SecondsFormat::Nanos, true),
        }))
        .map_err(|e| format!("--since: {e}"))?,
        (None, None) if until_end => DeliverPolicy::All,
        (None, None) => DeliverPolicy::New,
    };
    if until_end && (last == 0 || args.from_sequence.is_some_and(|s| s > last)) {
        return Ok(());
    }
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy,
            filter_subject: args
                .aggregate_type
                .as_deref()
                .map(|t| topology.events_of(t))
                .unwrap_or_default(),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("cannot read {name}: {e}"))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| format!("cannot read {name}: {e}"))?;
    let mut written: u64 = 0;
    loop {
        // A replay ends at the stream's end as of its start; with a filter, the last
        // matching message may come before it, so an idle second also ends a replay.
        let next = if until_end {
            match tokio::time::timeout(Duration::from_secs(1), messages.next()).await {
                Ok(next) => next,
                Err(_) => break,
            }
        } else {
            messages.next().await
        };
        let Some(message) = next else { break };
        let message = message.map_err(|e| format!("reading {name}: {e}"))?;
        let sequence = message
            .info()
            .map_err(|e| format!("reading {name}: {e}"))?
            .stream_sequence;
        match serde_json::from_slice::<&RawValue>(&message.payload) {
            Ok(event) => {
                let line = format!(
                    "{{\"stream_sequence\":{sequence},\"subject\":{},\"event\":{}}}",
                    serde_json::Value::from(message.subject.as_str()),
                    event.get()
                );
                writeln!(out, "{line}").map_err(|e| format!("writing: {e}"))?;
                out.flush().map_err(|e| format!("writing: {e}"))?;
            }
            Err(_) => {
                let _ = writeln!(
                    err,
                    "eriop-audit: message {sequence} of {name} is not JSON; skipped"
                );
            }
        }
        written += 1;
        if until_end && sequence >= last {
            break;
        }
        if written.is_multiple_of(10_000) {
            let _ = writeln!(
                err,
                "eriop-audit: {written} events, at stream sequence {sequence} of {last}"
            );
        }
    }
    Ok(())
}
