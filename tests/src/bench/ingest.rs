//! Ingest: the broker alone (the ceiling), then ERIOP end to end, publish to committed row,
//! at saturation and at fixed offered rates.
//!
//! End to end, a message's latency is `pg_xact_commit_timestamp(xmin) - time` of its row:
//! the benchmark's PostgreSQL records commit times (`track_commit_timestamp`), and a light's
//! sample time is its clock when it published. Rows are counted exactly at the end of each
//! run (one marker attribute per message); while a run goes, the projections' counter of
//! committed rows (`eriop_projection_telemetry_rows_total`) follows progress cheaply.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use reqwest::Method;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event};
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

use super::fleet::{self, Fleet, Offer};
use super::procs::{Meter, Usage, Watched};
use crate::faults::stack::Stack;
use crate::mosquitto::Broker;

/// The registry the benchmark's lights are in.
pub const REGISTRY: &str = "bench";
/// Messages a saturation run lets wait between the broker's PUBACK and the committed row:
/// the load generator pauses above it, so a run measures a steady state, not a backlog.
const WINDOW: u64 = 20_000;
/// Each message has one row of this attribute (and three others).
const MARKER: (&str, &str) = ("lampMonitor001", "supplyVoltage");
pub const SAMPLES_PER_MESSAGE: u64 = 4;

/// One ERIOP run.
#[derive(Debug, Clone)]
pub struct Run {
    pub label: String,
    pub offered: Option<u32>,
    pub sent: u64,
    pub stored: u64,
    /// First publish to last commit.
    pub seconds: f64,
    /// Publish to committed row, ms, sorted.
    pub latencies_ms: Vec<f64>,
    /// Per second since the start: messages published (of those stored) and committed.
    pub timeline: Vec<(u32, u64, u64)>,
    pub usage: BTreeMap<String, Usage>,
}

impl Run {
    pub fn per_second(&self) -> f64 {
        self.stored as f64 / self.seconds.max(1e-3)
    }

    pub fn percentile(&self, p: f64) -> f64 {
        percentile(&self.latencies_ms, p)
    }
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The broker alone, as measured.
#[derive(Debug, Clone)]
pub struct Ceiling {
    pub sent: u64,
    pub received: u64,
    pub per_second: f64,
    pub usage: BTreeMap<String, Usage>,
}

/// The same lights and payloads to one QoS 1 subscriber (Receive Maximum 1,000, as the
/// bridge), on a broker of its own configured as ERIOP's, for `seconds`.
pub async fn ceiling(devices: usize, seconds: u64) -> Ceiling {
    let broker = Broker::start_tls();
    let ca = broker.ca_file();
    let mut options = fleet::options("bench-ceiling-subscriber", broker.port, &ca);
    options.set_receive_maximum(Some(1_000));
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    let (tx, received) = watch::channel((0_u64, None::<Instant>, None::<Instant>));
    let subscribed = client.clone();
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let filter = Filter::new(
                        format!("registries/{REGISTRY}/devices/+/states"),
                        QoS::AtLeastOnce,
                    );
                    let _ = subscribed.subscribe_many([filter]).await;
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => tx.send_modify(|r| r.0 += 0),
                Ok(Event::Incoming(Packet::Publish(_))) => tx.send_modify(|(n, first, last)| {
                    let now = Instant::now();
                    *n += 1;
                    first.get_or_insert(now);
                    *last = Some(now);
                }),
                Ok(_) => {}
                Err(e) => {
                    eprintln!("bench: the ceiling's subscriber failed ({e}); reconnecting");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    let mut subscribed = received.clone();
    let _ = tokio::time::timeout(Duration::from_secs(10), subscribed.changed()).await;
    let fleet = Fleet::connect(devices, REGISTRY, "bench-ceiling", broker.port, &ca).await;
    let watched = [
        Watched {
            name: "mosquitto".into(),
            pid: broker.pid().unwrap_or(0),
            tree: false,
        },
        Watched {
            name: "load generator".into(),
            pid: std::process::id(),
            tree: false,
        },
    ];
    let meter = Meter::start(&watched);
    let (_open_tx, open) = watch::channel(true);
    eprintln!("ingest: the broker alone, {devices} lights as fast as QoS 1 goes, {seconds} s...");
    fleet
        .send(Offer::Saturate, Duration::from_secs(seconds), open)
        .await;
    fleet.await_acks(Duration::from_secs(60)).await;
    let sent = fleet.counters.acked.load(Ordering::Relaxed);
    let mut all = received.clone();
    let _ = tokio::time::timeout(Duration::from_secs(60), all.wait_for(|r| r.0 >= sent)).await;
    let usage = meter.stop();
    task.abort();
    let (count, first, last) = *received.borrow();
    let span = match (first, last) {
        (Some(f), Some(l)) => l.duration_since(f).as_secs_f64(),
        _ => 0.0,
    };
    Ceiling {
        sent,
        received: count,
        per_second: count as f64 / span.max(1e-3),
        usage,
    }
}

/// A device class, the registry `bench` of the administrator's agency and `devices` lights
/// `SN-{n}` in it (one bulk registration): their agency.
pub async fn register(stack: &Stack, devices: usize) -> Uuid {
    let class = json!({"name": "Bench light", "functions": [
        {"id": "lampMonitor001", "type": "LampMonitorFunction"},
        {"id": "lampActuator001", "type": "LampActuatorFunction"}]});
    let class = stack
        .call(Method::POST, "/device-classes", Some(class), "id")
        .await;
    stack.await_shown(&format!("/device-classes/{class}")).await;
    let agency = stack.call(Method::GET, "/auth/me", None, "agency_id").await;
    let assigned = stack
        .request(Method::POST, "/registries")
        .json(&json!({ "registry": REGISTRY, "agency_id": agency }))
        .send()
        .await
        .unwrap();
    assert!(
        assigned.status().is_success(),
        "{:?}",
        assigned.text().await
    );
    stack.await_shown(&format!("/registries/{REGISTRY}")).await;
    let mut csv = String::from("class_id,registry,serial,name\n");
    for n in 0..devices {
        csv.push_str(&format!("{class},{REGISTRY},SN-{n},Bench {n}\n"));
    }
    let report: serde_json::Value = stack
        .request(Method::POST, "/devices/bulk")
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["registered"], devices, "{report}");
    // The bridge finds devices in the read model.
    crate::wait::until(
        "the lights in the read model",
        Duration::from_secs(120),
        || async {
            let shown: i64 = sqlx::query_scalar("SELECT count(*) FROM devices WHERE registry = $1")
                .bind(REGISTRY)
                .fetch_one(&stack.db)
                .await
                .ok()?;
            (shown as usize >= devices).then_some(())
        },
    )
    .await;
    agency.parse().unwrap()
}

/// Telemetry rows committed so far, as the projections count them
/// (`eriop_projection_telemetry_rows_total`, exact once committed); without that, PostgreSQL's
/// statistics, which lag by a second or more and would pause the lights for nothing.
#[derive(Clone)]
struct Committed {
    http: reqwest::Client,
    metrics: Option<String>,
    db: PgPool,
}

impl Committed {
    fn of(stack: &Stack) -> Self {
        let metrics = stack
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == "ERIOP_PROJECTIONS_OPS_ADDR")
            .map(|(_, addr)| format!("http://{addr}/metrics"));
        Self {
            http: stack.http.clone(),
            metrics,
            db: stack.db.clone(),
        }
    }

    async fn rows(&self) -> u64 {
        if let Some(url) = &self.metrics {
            let body = match self.http.get(url).send().await {
                Ok(answer) => answer.text().await.ok(),
                Err(_) => None,
            };
            let counted = body.as_deref().and_then(|body| {
                body.lines()
                    .find_map(|l| l.strip_prefix("eriop_projection_telemetry_rows_total "))
                    .and_then(|n| n.trim().parse::<u64>().ok())
            });
            if let Some(n) = counted {
                return n;
            }
        }
        rows_estimate(&self.db).await
    }
}

/// Rows inserted into telemetry so far, by PostgreSQL's statistics (behind by a second or
/// more; cheap on a table of millions of rows).
async fn rows_estimate(db: &PgPool) -> u64 {
    let rows: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(n_tup_ins), 0)::bigint FROM pg_stat_user_tables
          WHERE schemaname = 'public' AND (relname = 'telemetry' OR relname LIKE 'telemetry\\_%')",
    )
    .fetch_one(db)
    .await
    .unwrap_or(0);
    u64::try_from(rows).unwrap_or(0)
}

/// Messages of `agency` stored with a sample time in `[from_ms, to_ms]`: exact.
async fn stored(db: &PgPool, agency: Uuid, from_ms: i64, to_ms: i64) -> u64 {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM telemetry
          WHERE agency_id = $1 AND time >= to_timestamp($2 / 1000.0) AND time <= to_timestamp($3 / 1000.0)
            AND function_id = $4 AND attribute = $5",
    )
    .bind(agency)
    .bind(from_ms as f64)
    .bind(to_ms as f64)
    .bind(MARKER.0)
    .bind(MARKER.1)
    .fetch_one(db)
    .await
    .unwrap_or(0);
    u64::try_from(n).unwrap_or(0)
}

/// One run of `seconds` on the deployment: sent, stored, latencies, timeline, each
/// process's CPU and peak memory.
pub async fn run(
    stack: &Stack,
    fleet: &Fleet,
    agency: Uuid,
    offer: Offer,
    seconds: u64,
    watched: &[Watched],
) -> Run {
    let label = match offer {
        Offer::Saturate => "saturation".to_owned(),
        Offer::Rate(r) => format!("{r} msg/s offered"),
    };
    let db = &stack.db;
    let committed = Committed::of(stack);
    let base_rows = committed.rows().await;
    let acked_before = fleet.counters.acked.load(Ordering::Relaxed);
    let start_ms = chrono::Utc::now().timestamp_millis();
    let started = Instant::now();
    let (open_tx, open) = watch::channel(true);
    let counters = fleet.counters.clone();
    let what = label.clone();
    let backlog = Backlog::connect(stack).await;
    let sampler = tokio::spawn({
        let committed = committed.clone();
        async move {
            let mut last_report = Instant::now();
            loop {
                let stored = committed.rows().await.saturating_sub(base_rows) / SAMPLES_PER_MESSAGE;
                let sent = counters.acked.load(Ordering::Relaxed) - acked_before;
                if matches!(offer, Offer::Saturate) {
                    open_tx.send_if_modified(|o| {
                        let want = sent.saturating_sub(stored) < WINDOW;
                        std::mem::replace(o, want) != want
                    });
                }
                if last_report.elapsed() >= Duration::from_secs(5) {
                    // Where the messages sent and not yet stored wait: in JetStream (the
                    // projector is behind) or before it (the broker's queue and the bridge).
                    let (streamed, unacked) = backlog.telemetry().await;
                    eprintln!(
                        "ingest {what}: {:.0} s, sent {sent}, stored about {stored}; TELEMETRY consumer: {streamed} JetStream messages pending, {unacked} unacked",
                        started.elapsed().as_secs_f64()
                    );
                    last_report = Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    });
    let meter = Meter::start(watched);
    fleet.send(offer, Duration::from_secs(seconds), open).await;
    let all_acked = fleet.await_acks(Duration::from_secs(60)).await;
    let sent = fleet.counters.acked.load(Ordering::Relaxed) - acked_before;
    let end_ms = fleet.counters.last_ms.load(Ordering::Relaxed);
    if !all_acked {
        eprintln!("ingest {label}: the broker did not acknowledge every message within 60 s");
    }
    // Drain: until every acknowledged message is a row, or nothing moved for 30 s.
    let mut last = (0, Instant::now());
    let stored = loop {
        let estimate = committed.rows().await.saturating_sub(base_rows) / SAMPLES_PER_MESSAGE;
        if estimate >= sent {
            let exact = stored(db, agency, start_ms, end_ms).await;
            if exact >= sent {
                break exact;
            }
        }
        if estimate != last.0 {
            last = (estimate, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(30) {
            break stored(db, agency, start_ms, end_ms).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let usage = meter.stop();
    sampler.abort();
    let (latencies_ms, timeline, last_commit_ms) = measured(db, agency, start_ms, end_ms).await;
    let seconds = ((last_commit_ms - start_ms as f64) / 1000.0).max(1e-3);
    let run = Run {
        label,
        offered: match offer {
            Offer::Saturate => None,
            Offer::Rate(r) => Some(r),
        },
        sent,
        stored,
        seconds,
        latencies_ms,
        timeline,
        usage,
    };
    eprintln!(
        "ingest {}: {:.0} msg/s, sent={} stored={}, latency ms p50 {:.0} p99 {:.0} max {:.0}",
        run.label,
        run.per_second(),
        run.sent,
        run.stored,
        run.percentile(0.5),
        run.percentile(0.99),
        run.percentile(1.0)
    );
    eprintln!("ingest {}: {}", run.label, usage_line(&run.usage));
    run
}

/// Each process's cores and peak memory, on one line: what a partial run (`--only`) shows
/// of the table the report holds.
fn usage_line(usage: &BTreeMap<String, Usage>) -> String {
    usage
        .iter()
        .map(|(name, u)| format!("{name} {:.2} cores {:.0} MiB", u.cores, u.peak_mib))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The telemetry projector's JetStream consumer, read while a run goes.
struct Backlog {
    js: Option<async_nats::jetstream::Context>,
    stream: String,
}

impl Backlog {
    async fn connect(stack: &Stack) -> Self {
        let js = async_nats::connect(stack.nats.urls())
            .await
            .ok()
            .map(async_nats::jetstream::new);
        let stream = eriop_nats::Topology::new(stack.prefix.as_str())
            .stream_name(eriop_nats::Stream::Telemetry);
        Self { js, stream }
    }

    /// JetStream messages not yet delivered to the projector, and delivered but not acked
    /// (each holds up to a bridge group's samples of one agency).
    async fn telemetry(&self) -> (u64, usize) {
        let Some(js) = &self.js else { return (0, 0) };
        let Ok(stream) = js.get_stream(&self.stream).await else {
            return (0, 0);
        };
        match stream
            .consumer_info(eriop_projections::telemetry::NAME)
            .await
        {
            Ok(info) => (info.num_pending, info.num_ack_pending),
            Err(_) => (0, 0),
        }
    }
}

/// Each stored message's latency (sorted), the per-second timeline, the last commit (Unix ms).
async fn measured(
    db: &PgPool,
    agency: Uuid,
    start_ms: i64,
    end_ms: i64,
) -> (Vec<f64>, Vec<(u32, u64, u64)>, f64) {
    let rows: Vec<(f64, f64)> = sqlx::query_as(
        "SELECT extract(epoch FROM time)::float8 * 1000,
                extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8 * 1000
           FROM telemetry
          WHERE agency_id = $1 AND time >= to_timestamp($2 / 1000.0) AND time <= to_timestamp($3 / 1000.0)
            AND function_id = $4 AND attribute = $5",
    )
    .bind(agency)
    .bind(start_ms as f64)
    .bind(end_ms as f64)
    .bind(MARKER.0)
    .bind(MARKER.1)
    .fetch_all(db)
    .await
    .unwrap_or_else(|e| panic!("commit times (track_commit_timestamp must be on): {e}"));
    let mut latencies: Vec<f64> = rows.iter().map(|(t, c)| (c - t).max(0.0)).collect();
    latencies.sort_by(f64::total_cmp);
    let last_commit = rows.iter().map(|r| r.1).fold(start_ms as f64, f64::max);
    let bucket = |ms: f64| ((ms - start_ms as f64) / 1000.0).max(0.0) as usize;
    slowest_seconds(&rows, bucket);
    let mut timeline = vec![(0_u64, 0_u64); bucket(last_commit) + 1];
    for (t, c) in &rows {
        if let Some(b) = timeline.get_mut(bucket(*t)) {
            b.0 += 1;
        }
        if let Some(b) = timeline.get_mut(bucket(*c)) {
            b.1 += 1;
        }
    }
    let timeline = timeline
        .into_iter()
        .enumerate()
        .map(|(s, (sent, stored))| (u32::try_from(s).unwrap_or(u32::MAX), sent, stored))
        .collect();
    (latencies, timeline, last_commit)
}

/// Prints the seconds (by publish time) whose p99 was the worst: a tail spread over the whole
/// run is a steady cost, one packed into a few seconds is an event (a checkpoint, a vacuum,
/// the rollup of a minute) to look for at that moment.
fn slowest_seconds(rows: &[(f64, f64)], bucket: impl Fn(f64) -> usize) {
    let mut seconds: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for (t, c) in rows {
        seconds
            .entry(bucket(*t))
            .or_default()
            .push((c - t).max(0.0));
    }
    let mut p99s: Vec<(usize, f64, f64)> = seconds
        .into_iter()
        .map(|(second, mut latencies)| {
            latencies.sort_by(f64::total_cmp);
            let max = latencies.last().copied().unwrap_or(0.0);
            (second, percentile(&latencies, 0.99), max)
        })
        .collect();
    let over = p99s.iter().filter(|(_, p99, _)| *p99 > 250.0).count();
    let all = p99s.len();
    p99s.sort_by(|a, b| b.1.total_cmp(&a.1));
    let worst: Vec<String> = p99s
        .iter()
        .take(8)
        .map(|(second, p99, max)| format!("{second} s: p99 {p99:.0} max {max:.0}"))
        .collect();
    eprintln!(
        "ingest: {over} of {all} seconds had a p99 over 250 ms; the worst (by publish time, ms): {}",
        worst.join(", ")
    );
}
