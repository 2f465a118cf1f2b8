//! The report: `docs/BENCHMARKS.md` with every figure, the command, the machine and the
//! date, and the charts (SVG) beside it. Everything below the marker line [`KEPT`] is kept
//! as it was (the profile notes and the before/after record, written by people).

use std::fmt::Write as _;
use std::path::Path;

use super::ingest::{Ceiling, Run};
use super::statements::Statement;
use super::{api::Load, chart, Options, Results};

pub const KEPT: &str =
    "<!-- Everything below this line is kept by eriop-bench when it writes the report. -->";

/// The targets of the performance issue (2 cores, everything on one machine).
pub mod targets {
    pub const INGEST_MSG_S: f64 = 20_000.0;
    pub const INGEST_SHARE_OF_CEILING: f64 = 0.40;
    pub const INGEST_P99_AT_10K_MS: f64 = 250.0;
    pub const READS_S: f64 = 10_000.0;
    pub const READ_P99_AT_1K_MS: f64 = 20.0;
    pub const LOGINS_PER_CORE_S: f64 = 25.0;
    pub const LOGIN_P99_MS: f64 = 1_000.0;
    pub const COMMAND_P99_MS: f64 = 50.0;
    pub const REPLAY_EVENTS_S: f64 = 50_000.0;
    pub const IDLE_MIB: f64 = 64.0;
}

pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores ({cpu}), {memory:.1} GiB, Linux {}, {}",
        kernel.trim(),
        writeback()
    )
}

/// When the kernel writes dirty pages back: its bursts stall commits and fsyncs (README,
/// "Host tuning"), so a latency figure means little without it.
fn writeback() -> String {
    let vm = |name: &str| {
        std::fs::read_to_string(format!("/proc/sys/vm/{name}"))
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let threshold = match (vm("dirty_background_bytes"), vm("dirty_background_ratio")) {
        (Some(bytes), _) if bytes > 0 => format!("{} MiB", bytes >> 20),
        (_, Some(ratio)) => format!("{ratio}% of memory"),
        _ => "an unknown threshold".into(),
    };
    match vm("dirty_expire_centisecs") {
        Some(expire) => format!(
            "dirty pages written back after {} s or past {threshold}",
            expire as f64 / 100.0
        ),
        None => format!("dirty pages written back past {threshold}"),
    }
}

fn git(args: &[&str]) -> String {
    std::process::Command::new("git")
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**not met**"
    }
}

/// The issue's one line for the ingest section.
pub fn ingest_line(saturation: &Run, ceiling: Option<&Ceiling>) -> String {
    let per_second = saturation.per_second();
    let (share, top) = ceiling.map_or((f64::NAN, f64::NAN), |c| {
        (100.0 * per_second / c.per_second, c.per_second)
    });
    format!(
        "ingest: {per_second:.0} msg/s, {:.0} samples/s, {share:.0}% of broker alone ({top:.0} msg/s), sent={} stored={}",
        per_second * super::ingest::SAMPLES_PER_MESSAGE as f64,
        saturation.sent,
        saturation.stored
    )
}

fn usage_table(out: &mut String, runs: &[&Run], ceiling: Option<&Ceiling>) {
    let mut names: Vec<String> = Vec::new();
    for run in runs {
        for name in run.usage.keys() {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    let _ = write!(out, "| run |");
    for name in &names {
        let _ = write!(out, " {name} |");
    }
    let _ = writeln!(out);
    let _ = write!(out, "|---|");
    for _ in &names {
        let _ = write!(out, "---:|");
    }
    let _ = writeln!(out);
    if let Some(c) = ceiling {
        let _ = write!(out, "| broker alone |");
        for name in &names {
            match c.usage.get(name) {
                Some(u) => {
                    let _ = write!(out, " {:.2} cores, {:.0} MiB |", u.cores, u.peak_mib);
                }
                None => {
                    let _ = write!(out, " |");
                }
            }
        }
        let _ = writeln!(out);
    }
    for run in runs {
        let _ = write!(out, "| {} |", run.label);
        for name in &names {
            let u = run.usage.get(name).cloned().unwrap_or_default();
            let _ = write!(out, " {:.2} cores, {:.0} MiB |", u.cores, u.peak_mib);
        }
        let _ = writeln!(out);
    }
}

/// PostgreSQL's costliest statements of the saturation run, each with its share of every
/// statement's time.
fn statement_table(out: &mut String, statements: &[Statement], total_ms: f64) {
    let _ = writeln!(
        out,
        "PostgreSQL's statements during the saturation run, the costliest first \
         (`pg_stat_statements`: time inside each statement, so CPU and the waits within it; \
         a `COMMIT`'s time is its WAL flush). All statements: {:.1} s.\n",
        total_ms / 1000.0
    );
    let _ = writeln!(
        out,
        "| statement | calls | rows | total s | share | µs a row |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    for s in statements {
        let mut query: String = s.query.chars().take(110).collect();
        if query.len() < s.query.len() {
            query.push('…');
        }
        let per_row = if s.rows > 0 {
            format!("{:.1}", s.total_ms * 1000.0 / s.rows as f64)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {:.1} | {:.0}% | {} |",
            query.replace('|', "\\|").replace('`', "'"),
            s.calls,
            s.rows,
            s.total_ms / 1000.0,
            100.0 * s.total_ms / total_ms.max(1e-9),
            per_row
        );
    }
    let _ = writeln!(out);
}

fn load_rows(out: &mut String, loads: &[&Load]) {
    let _ = writeln!(
        out,
        "| load | requests/s | p50 ms | p99 ms | max ms | answers |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---|");
    for l in loads {
        let answers: Vec<String> = l
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.1} | {:.1} | {:.1} | {} |",
            l.label,
            l.per_second,
            l.p50_ms,
            l.p99_ms,
            l.max_ms,
            answers.join(", ")
        );
    }
    let _ = writeln!(out);
    for l in loads {
        let _ = writeln!(out, "- {}: `{}`", l.label, l.command);
    }
    let _ = writeln!(out);
}

/// Writes the report to `path` (and its charts beside it, in `benchmarks/`).
pub fn write(
    path: &Path,
    options: &Options,
    results: &Results,
    command: &str,
) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let charts = dir.join("benchmarks");
    std::fs::create_dir_all(&charts).map_err(|e| e.to_string())?;
    let kept = std::fs::read_to_string(path)
        .ok()
        .and_then(|old| old.split_once(KEPT).map(|(_, rest)| rest.to_owned()))
        .unwrap_or_default();
    let mut out = String::new();
    let commit = git(&["rev-parse", "--short", "HEAD"]);
    let dirty = if git(&["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        ""
    } else {
        " with uncommitted changes"
    };
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "Written by `make bench` (`{command}`) on {}, at commit {commit}{dirty}.\n\n\
         - Machine: {}.\n\
         - Deployment: everything on this machine, on loopback. Release builds of `eriop-gateway`, `eriop-projections` and `eriop-bridge`, \
         each its own process configured by `ERIOP_*` variables; a private Mosquitto 2 (TLS 1.2+, `max_inflight_messages 1000`, persistence); \
         a private nats-server (JetStream, `sync_interval: always`: every message on disk before its ack); a private PostgreSQL cluster, durable \
         (`fsync=on`, `synchronous_commit=on`, `shared_buffers=512MB`, `track_commit_timestamp=on` for the latencies, `pg_stat_statements` for where its time goes), plain PostgreSQL with \
         the telemetry table partitioned by day (this machine has no TimescaleDB server); the machine's Redis. The load generators run on the \
         same two cores (their CPU is in the tables).\n\
         - Nothing in `make test` asserts a time: these figures are measured here, not checked.\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        machine()
    );
    if !options.settings.is_empty() {
        let set: Vec<String> = options
            .settings
            .iter()
            .map(|(k, v)| format!("`{k}={v}`"))
            .collect();
        let _ = writeln!(out, "Settings changed for this run: {}.\n", set.join(", "));
    }

    let _ = writeln!(out, "## Targets\n\n| target | measured | |\n|---|---:|---|");
    let saturation = results.ingest.iter().find(|r| r.offered.is_none());
    if let Some(s) = saturation {
        let _ = writeln!(
            out,
            "| ingest at least {:.0} messages/s, sent = stored | {:.0} msg/s, sent {} stored {} | {} |",
            targets::INGEST_MSG_S,
            s.per_second(),
            s.sent,
            s.stored,
            mark(s.per_second() >= targets::INGEST_MSG_S && s.sent == s.stored)
        );
        if let Some(c) = &results.ceiling {
            let share = s.per_second() / c.per_second;
            let _ = writeln!(
                out,
                "| ingest at least {:.0}% of the broker alone | {:.0}% of {:.0} msg/s | {} |",
                targets::INGEST_SHARE_OF_CEILING * 100.0,
                share * 100.0,
                c.per_second,
                mark(share >= targets::INGEST_SHARE_OF_CEILING)
            );
        }
    }
    if let Some(r) = results.ingest.iter().find(|r| r.offered == Some(10_000)) {
        let _ = writeln!(
            out,
            "| ingest p99 under {:.0} ms at 10,000 msg/s | {:.0} ms ({:.0} msg/s stored) | {} |",
            targets::INGEST_P99_AT_10K_MS,
            r.percentile(0.99),
            r.per_second(),
            mark(r.percentile(0.99) < targets::INGEST_P99_AT_10K_MS && r.sent == r.stored)
        );
    }
    let saturated: Vec<&Load> = results
        .reads
        .iter()
        .filter(|l| l.label.ends_with("saturation"))
        .collect();
    if let Some(worst) = saturated
        .iter()
        .min_by(|a, b| a.per_second.total_cmp(&b.per_second))
    {
        let _ = writeln!(
            out,
            "| at least {:.0} authenticated reads/s (each read) | {:.0}/s at worst ({}) | {} |",
            targets::READS_S,
            worst.per_second,
            worst.label,
            mark(worst.per_second >= targets::READS_S)
        );
    }
    let paced: Vec<&Load> = results
        .reads
        .iter()
        .filter(|l| l.label.ends_with("1,000 requests/s"))
        .collect();
    if let Some(worst) = paced.iter().max_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms)) {
        let _ = writeln!(
            out,
            "| read p99 under {:.0} ms at 1,000/s | {:.1} ms at worst ({}) | {} |",
            targets::READ_P99_AT_1K_MS,
            worst.p99_ms,
            worst.label,
            mark(worst.p99_ms < targets::READ_P99_AT_1K_MS)
        );
    }
    if let Some(l) = &results.logins {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1) as f64;
        let _ = writeln!(
            out,
            "| logins at least {:.0}/s a core, p99 under {:.0} ms at 16 in flight | {:.1}/s ({:.1} a core), p99 {:.0} ms | {} |",
            targets::LOGINS_PER_CORE_S,
            targets::LOGIN_P99_MS,
            l.per_second,
            l.per_second / cores,
            l.p99_ms,
            mark(l.per_second / cores >= targets::LOGINS_PER_CORE_S && l.p99_ms < targets::LOGIN_P99_MS)
        );
    }
    for c in &results.commands {
        let _ = writeln!(
            out,
            "| command p99 under {:.0} ms, request to read model: {} | {:.1} ms | {} |",
            targets::COMMAND_P99_MS,
            c.label,
            c.p99_ms,
            mark(c.p99_ms < targets::COMMAND_P99_MS)
        );
    }
    if let Some(r) = &results.replay {
        let _ = writeln!(
            out,
            "| replay at least {:.0} events/s | {:.0} events/s | {} |",
            targets::REPLAY_EVENTS_S,
            r.per_second,
            mark(r.per_second >= targets::REPLAY_EVENTS_S)
        );
    }
    for name in ["gateway", "projections", "bridge"] {
        if let Some(mib) = results.idle.get(name) {
            let _ = writeln!(
                out,
                "| {name} under {:.0} MiB resident idle | {mib:.1} MiB | {} |",
                targets::IDLE_MIB,
                mark(*mib < targets::IDLE_MIB)
            );
        }
    }
    let _ = writeln!(out);

    if !results.ingest.is_empty() {
        let _ = writeln!(
            out,
            "## Ingest\n\n{} virtual lights, one MQTT v5 connection each over TLS, QoS 1 `states` messages of four samples (the simulator's \
             street light), at most 100 unacknowledged a light. A message counts as sent once the broker PUBACKed it; end to end is publish \
             to committed row (`pg_xact_commit_timestamp` of the row minus the sample's time, which is the light's clock when it published). \
             At saturation the lights pause while more than 20,000 acknowledged messages wait to be committed, so the run measures a steady \
             state, not a backlog; throughput is stored messages over first publish to last commit.\n",
            options.devices
        );
        if let Some(c) = &results.ceiling {
            let _ = writeln!(
                out,
                "Broker alone (the ceiling): the same lights and payloads to one QoS 1 subscriber (Receive Maximum 1,000, as the bridge) on a \
                 broker configured as ERIOP's, {} s: **{:.0} msg/s** received ({} sent, {} received).\n",
                options.ceiling_seconds, c.per_second, c.sent, c.received
            );
        }
        if let Some(s) = saturation {
            let _ = writeln!(
                out,
                "```\n{}\n```\n",
                ingest_line(s, results.ceiling.as_ref())
            );
        }
        let _ = writeln!(out, "| run | seconds | msg/s stored | samples/s | sent | stored | p50 ms | p99 ms | max ms |");
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for r in &results.ingest {
            let _ = writeln!(
                out,
                "| {} | {:.1} | {:.0} | {:.0} | {} | {} | {:.0} | {:.0} | {:.0} |",
                r.label,
                r.seconds,
                r.per_second(),
                r.per_second() * super::ingest::SAMPLES_PER_MESSAGE as f64,
                r.sent,
                r.stored,
                r.percentile(0.5),
                r.percentile(0.99),
                r.percentile(1.0)
            );
        }
        let _ = writeln!(out, "\nCPU (cores used on average, 1.00 = one core all along) and peak resident memory of each process during each run:\n");
        let runs: Vec<&Run> = results.ingest.iter().collect();
        usage_table(&mut out, &runs, results.ceiling.as_ref());
        let _ = writeln!(out);
        if let Some((statements, total_ms)) = &results.statements {
            statement_table(&mut out, statements, *total_ms);
        }
        if let Some(s) = saturation {
            chart::throughput(&charts.join("ingest-throughput.svg"), s)?;
            let _ = writeln!(
                out,
                "![Ingest throughput over time](benchmarks/ingest-throughput.svg)\n"
            );
        }
        chart::latency(&charts.join("ingest-latency.svg"), &runs)?;
        let _ = writeln!(
            out,
            "![Ingest latency distribution](benchmarks/ingest-latency.svg)\n"
        );
    }

    if !results.reads.is_empty() || results.logins.is_some() {
        let _ = writeln!(
            out,
            "## API\n\nAs a viewer would call it, with an access token (`oha`, a process of its own); saturation with {} connections, then a \
             fixed 1,000 requests/s (latency corrected for coordinated omission). The device list holds {} devices (one page of 100); the \
             telemetry read is one attribute over the last day in 5-minute buckets; the last read draws one of the fleet's devices at random for each \
             request. A gateway answers a hot read from its agency's answer to the same request for up to `ERIOP_READ_CACHE_MS` (500 ms unless `--set` says otherwise; README, \
             \"Performance\"), so the first three reads measure that path, and the last a mix of it and PostgreSQL.\n",
            options.connections, options.devices
        );
        let mut loads: Vec<&Load> = results.reads.iter().collect();
        loads.extend(results.logins.iter());
        loads.extend(results.refreshes.iter());
        load_rows(&mut out, &loads);
    }
    if !results.commands.is_empty() {
        let _ = writeln!(
            out,
            "## Command path\n\nEach command answered once the read model shows it (aggregate, event store, relay, JetStream, projection, \
             then `201`/`200`): its latency is request to read model. A `202` would mean the read model lagged past its bound.\n"
        );
        let loads: Vec<&Load> = results.commands.iter().collect();
        load_rows(&mut out, &loads);
    }
    if let Some(r) = &results.replay {
        let _ = writeln!(
            out,
            "## Replay\n\n`eriop-projections rebuild` (what `make rebuild` runs) over {} events (agencies created then renamed nine times, \
             interleaved as a busy store's are, so a page holds one event of each of a thousand agencies; written by SQL from the \
             store's own events in {:.0} s): **{:.0} events/s**, {:.1} s, every read model replayed into shadow tables page by page \
             while the platform runs, then swapped in one transaction.\n",
            r.events, r.generated_in, r.per_second, r.seconds
        );
    }
    if !results.idle.is_empty() {
        let _ = writeln!(out, "## Memory\n\n| process | idle MiB | peak MiB under the saturation ingest |\n|---|---:|---:|");
        for (name, idle) in &results.idle {
            let peak = saturation
                .and_then(|s| s.usage.get(name))
                .map_or("".to_owned(), |u| format!("{:.0}", u.peak_mib));
            let _ = writeln!(out, "| {name} | {idle:.1} | {peak} |");
        }
        let _ = writeln!(out, "\nResident set size (PostgreSQL: proportional set size of the postmaster and its backends, shared buffers counted once).\n");
    }
    let _ = write!(out, "{KEPT}{kept}");
    std::fs::write(path, out).map_err(|e| e.to_string())
}
