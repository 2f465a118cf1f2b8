//! The API and the command path.
//!
//! Reads and logins are driven by `oha` (an HTTP load generator, a process of its own, as
//! a user would measure): requests/s at saturation, and the latency at a fixed 1,000
//! requests/s. Refreshes rotate their token (each refresh token is good once), so they are
//! driven here, each worker following its own chain. Commands are driven here too, each
//! answered once the read model shows it (`201`/`200`; a `202` would mean the read model
//! lagged past its bound and is counted apart).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};

use super::ingest::percentile;
use crate::faults::stack::Stack;

/// What one load measured.
#[derive(Debug, Clone, Default)]
pub struct Load {
    pub label: String,
    pub command: String,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Answers by status ("200": n); transport errors under "error".
    pub statuses: BTreeMap<String, u64>,
}

impl Load {
    pub fn ok(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| s.starts_with('2'))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn total(&self) -> u64 {
        self.statuses.values().sum()
    }
}

/// The `oha` to run: `ERIOP_BENCH_OHA`, else on the PATH (`make bench` installs it).
fn oha_binary() -> String {
    std::env::var("ERIOP_BENCH_OHA").unwrap_or_else(|_| "oha".into())
}

/// Runs `oha` with `args` (its JSON summary) and reads what it measured.
pub async fn oha(label: &str, args: Vec<String>) -> Load {
    let binary = oha_binary();
    let mut full = vec![
        "--no-tui".to_owned(),
        "--output-format".to_owned(),
        "json".to_owned(),
    ];
    full.extend(args);
    let shown = format!("oha {}", redact(&full).join(" "));
    eprintln!("api: {label}: {shown}");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&binary).args(&full).output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| {
        panic!(
            "{label}: cannot run oha ({e}); `make bench` installs it (cargo install --locked oha)"
        )
    });
    assert!(
        output.status.success(),
        "{label}: oha failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{label}: oha's JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    let seconds = |v: &Value| v.as_f64().unwrap_or(f64::NAN) * 1000.0;
    let mut statuses: BTreeMap<String, u64> = report["statusCodeDistribution"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    // Requests cut by the end of a `-z` run are not answers (oha counts them as errors).
    let errors: u64 = report["errorDistribution"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !k.contains("deadline"))
                .filter_map(|(_, v)| v.as_u64())
                .sum()
        })
        .unwrap_or(0);
    if errors > 0 {
        statuses.insert("error".into(), errors);
    }
    Load {
        label: label.to_owned(),
        command: shown,
        per_second: report["summary"]["requestsPerSec"]
            .as_f64()
            .unwrap_or(f64::NAN),
        p50_ms: seconds(&report["latencyPercentiles"]["p50"]),
        p99_ms: seconds(&report["latencyPercentiles"]["p99"]),
        max_ms: seconds(&report["summary"]["slowest"]),
        statuses,
    }
}

/// The command line as shown: no token or password in the report.
fn redact(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut hide_next = false;
    for a in args {
        if hide_next {
            out.push(if a.starts_with("Authorization") {
                "'Authorization: Bearer $TOKEN'".into()
            } else {
                "'$BODY'".into()
            });
            hide_next = false;
        } else {
            hide_next = a == "-H" || a == "-d";
            out.push(shorten(a));
        }
    }
    out
}

/// A URL that alternates the fleet's device ids, as `(<200 device ids>)`: the report shows
/// the command, not two hundred ids.
fn shorten(arg: &str) -> String {
    match (arg.find("/devices/("), arg.rfind(')')) {
        (Some(at), Some(end)) if end > at => {
            let ids = arg[at + 10..end].split('|').count();
            format!(
                "'{}(<{ids} device ids>){}'",
                &arg[..at + 9],
                &arg[end + 1..]
            )
        }
        _ => arg.to_owned(),
    }
}

/// Waits until a day's read of `device` takes every minute of its samples from the rollup:
/// the minute of its last sample rolled up (no marks left before its end) and at least
/// [`ROLLED_AFTER`] past it. Right after the ingest section that is up to about a minute;
/// before it, the read's recent end is raw samples (tens a second for this device).
///
/// [`ROLLED_AFTER`]: eriop_gateway::telemetry::rollup::ROLLED_AFTER
pub async fn rolled_up(stack: &Stack, device: &str) {
    let Ok(device) = device.parse::<uuid::Uuid>() else {
        return;
    };
    let last: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT max(time) FROM telemetry WHERE device_id = $1")
            .bind(device)
            .fetch_one(&stack.db)
            .await
            .unwrap_or(None);
    let Some(last) = last else { return };
    let minute_end = chrono::DateTime::from_timestamp(
        eriop_domain::telemetry::minute_start(last.timestamp()) + 60,
        0,
    )
    .unwrap_or(last);
    let ready = minute_end + eriop_gateway::telemetry::rollup::ROLLED_AFTER;
    eprintln!(
        "api: waiting for the telemetry rollup to take the ingest's last minute (about {} s)...",
        (ready - chrono::Utc::now()).num_seconds().max(0)
    );
    loop {
        let marks: i64 =
            sqlx::query_scalar("SELECT count(*) FROM telemetry_touched WHERE minute < $1")
                .bind(minute_end)
                .fetch_one(&stack.db)
                .await
                .unwrap_or(1);
        if marks == 0 && chrono::Utc::now() >= ready {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Authenticated reads: the device list, one device's telemetry over a day, one device, and
/// one device of the fleet at random.
pub async fn reads(stack: &Stack, device: &str, seconds: u64, connections: u32) -> Vec<Load> {
    let day_ago = (chrono::Utc::now() - chrono::Duration::days(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let now = (chrono::Utc::now() + chrono::Duration::minutes(10))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let targets = [
        ("GET /api/v1/devices", stack.url("/devices")),
        (
            "GET one device's telemetry over a day (5 min buckets)",
            stack.url(&format!(
                "/devices/{device}/telemetry?attribute=lampMonitor001.activePower&from={day_ago}&to={now}&bucket=5m"
            )),
        ),
        ("GET one device", stack.url(&format!("/devices/{device}"))),
    ];
    let auth = format!("Authorization: Bearer {}", stack.token);
    let mut loads = Vec::new();
    let mut targets: Vec<(&str, String, &str)> = targets
        .into_iter()
        .map(|(label, url)| (label, url, ""))
        .collect();
    // Every device of the fleet in turn, at random (oha draws each URL from a regular
    // expression): what a gateway keeps for a moment is then each device's answer, not
    // one (`gateway/src/http/answers.rs`).
    let fleet: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM devices ORDER BY id")
        .fetch_all(&stack.db)
        .await
        .unwrap_or_default();
    if fleet.len() > 1 {
        let ids: Vec<String> = fleet.iter().map(uuid::Uuid::to_string).collect();
        // oha takes `.` in the regular expression as itself.
        let url = stack.url(&format!("/devices/({})", ids.join("|")));
        targets.push((
            "GET one device of the fleet, at random",
            url,
            "--rand-regex-url",
        ));
    }
    for (label, url, how) in targets {
        let common = |extra: &[&str]| {
            let mut a: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
            if !how.is_empty() {
                a.push(how.to_owned());
            }
            a.extend(["-H".into(), auth.clone(), url.clone()]);
            a
        };
        let z = format!("{seconds}s");
        let c = connections.to_string();
        loads.push(
            oha(
                &format!("{label}, saturation"),
                common(&["-z", &z, "-c", &c]),
            )
            .await,
        );
        loads.push(
            oha(
                &format!("{label}, 1,000 requests/s"),
                common(&["-z", &z, "-c", "32", "-q", "1000", "--latency-correction"]),
            )
            .await,
        );
    }
    loads
}

/// Logins of one user (argon2id), 16 in flight.
pub async fn logins(stack: &Stack, email: &str, password: &str, count: u32) -> Load {
    let body = json!({ "email": email, "password": password }).to_string();
    oha(
        "POST /api/v1/auth/login, 16 in flight",
        vec![
            "-n".into(),
            count.to_string(),
            "-c".into(),
            "16".into(),
            "-m".into(),
            "POST".into(),
            "-T".into(),
            "application/json".into(),
            "-d".into(),
            body,
            stack.url("/auth/login"),
        ],
    )
    .await
}

/// Answers and latencies of `count` calls, `concurrency` in flight, as a [`Load`].
async fn drive<F, Fut>(
    label: &str,
    command: String,
    count: usize,
    concurrency: usize,
    one: F,
) -> Load
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = String>,
{
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(count);
    let mut statuses = BTreeMap::new();
    let mut done = stream::iter(0..count)
        .map(|n| {
            let call = one(n);
            async move {
                let t = Instant::now();
                let status = call.await;
                (t.elapsed(), status)
            }
        })
        .buffer_unordered(concurrency);
    while let Some((latency, status)) = done.next().await {
        latencies.push(latency.as_secs_f64() * 1000.0);
        *statuses.entry(status).or_insert(0) += 1;
        if latencies.len() % (count / 5).max(1) == 0 {
            eprintln!("{label}: {}/{count}", latencies.len());
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    Load {
        label: label.to_owned(),
        command,
        per_second: count as f64 / elapsed.max(1e-3),
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: percentile(&latencies, 1.0),
        statuses,
    }
}

fn status(r: Result<reqwest::Response, reqwest::Error>) -> String {
    match r {
        Ok(r) => r.status().as_u16().to_string(),
        Err(_) => "error".into(),
    }
}

/// Refreshes: `workers` chains of refresh tokens, each rotated `per_worker` times.
pub async fn refreshes(
    stack: &Stack,
    email: &str,
    password: &str,
    workers: usize,
    per_worker: usize,
) -> Load {
    let mut chains = Vec::new();
    for _ in 0..workers {
        let login: Value = stack
            .http
            .post(stack.url("/auth/login"))
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        chains.push(tokio::sync::Mutex::new(
            login["refresh_token"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        ));
    }
    let chains = &chains;
    drive(
        "POST /api/v1/auth/token (refresh_token), one chain per worker",
        format!("{workers} workers x {per_worker} rotations, in process (reqwest)"),
        workers * per_worker,
        workers,
        |n| async move {
            let mut token = chains[n % workers].lock().await;
            let answer = stack
                .http
                .post(stack.url("/auth/token"))
                .form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", token.as_str()),
                ])
                .send()
                .await;
            match answer {
                Ok(r) if r.status() == 200 => {
                    let body: Value = r.json().await.unwrap_or_default();
                    *token = body["refresh_token"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    "200".into()
                }
                other => status(other),
            }
        },
    )
    .await
}

/// Commands, each answered once the read model shows it: `count` new agencies (distinct
/// aggregates), then `count` renames of one agency (one hot aggregate).
pub async fn commands(stack: &Stack, count: usize, concurrency: usize) -> Vec<Load> {
    let distinct = drive(
        "POST /api/v1/agencies (distinct aggregates)",
        format!("{count} creates, {concurrency} in flight, in process (reqwest)"),
        count,
        concurrency,
        |n| async move {
            status(
                stack
                    .request(Method::POST, "/agencies")
                    .json(&json!({ "name": format!("Bench agency {n}") }))
                    .send()
                    .await,
            )
        },
    )
    .await;
    let hot = stack
        .call(
            Method::POST,
            "/agencies",
            Some(json!({"name": "Hot agency"})),
            "id",
        )
        .await;
    let hot = &hot;
    let renames = drive(
        "PATCH /api/v1/agencies/{id} (one hot aggregate)",
        format!("{count} renames of one agency, {concurrency} in flight, in process (reqwest)"),
        count,
        concurrency,
        |n| async move {
            status(
                stack
                    .request(Method::PATCH, &format!("/agencies/{hot}"))
                    .json(&json!({ "name": format!("Hot agency {n}") }))
                    .send()
                    .await,
            )
        },
    )
    .await;
    vec![distinct, renames]
}
