//! Replay: `eriop-projections rebuild` (what `make rebuild` runs) over an event store of
//! `events` events.
//!
//! The events are made in SQL from the store's own agency events (same type, version and
//! metadata), as agencies created and then renamed nine times: ten events an aggregate,
//! each chained by the store's trigger like any other. Aggregates are interleaved as a busy
//! store's are (every agency of a chunk created, then every one renamed, ...), so a page of
//! the rebuild holds a thousand aggregates, one event each, and folding an aggregate's
//! events gains nothing: what is measured is the set-based write, not the fold. They are not relayed (the relay's
//! trigger is off while they are written): the benchmark measures the rebuild, not the
//! live path it already measured.

use std::time::{Duration, Instant};

use crate::faults::stack::Stack;

/// Events an aggregate: one creation, nine renames.
const PER_AGENCY: i64 = 10;
/// Agencies written per statement (progress between them).
const CHUNK: i64 = 5_000;

pub struct Replay {
    pub events: u64,
    pub seconds: f64,
    pub per_second: f64,
    pub generated_in: f64,
}

/// Adds synthetic events until the store holds at least `target`, then times the rebuild.
pub async fn replay(stack: &Stack, target: i64) -> Replay {
    let db = &stack.db;
    let (kind, version, metadata): (String, String, serde_json::Value) = sqlx::query_as(
        "SELECT aggregate_type, event_version, metadata - 'previous_hash' FROM events
          WHERE event_type = 'AgencyCreated' ORDER BY recorded_at DESC LIMIT 1",
    )
    .fetch_one(db)
    .await
    .expect("an agency event to copy (the command benchmark makes them; run it first)");
    let have: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(db)
        .await
        .unwrap();
    let agencies = ((target - have).max(0) + PER_AGENCY - 1) / PER_AGENCY;
    let started = Instant::now();
    sqlx::query("ALTER TABLE events DISABLE TRIGGER events_relay_enqueue")
        .execute(db)
        .await
        .unwrap();
    let mut from = 0;
    while from < agencies {
        let to = (from + CHUNK).min(agencies);
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT $1, a.id::text, s.n,
                    CASE WHEN s.n = 1 THEN 'AgencyCreated' ELSE 'AgencyRenamed' END, $2,
                    CASE WHEN s.n = 1
                         THEN jsonb_build_object('AgencyCreated', jsonb_build_object('id', a.id, 'name', 'Replayed agency ' || a.i))
                         ELSE jsonb_build_object('AgencyRenamed', jsonb_build_object('name', 'Replayed agency ' || a.i || ' v' || s.n))
                    END,
                    $3
               FROM (SELECT i, md5('eriop-bench-replay-' || i)::uuid AS id FROM generate_series($4::bigint, $5::bigint) i) a,
                    generate_series(1, $6::bigint) s(n)
              ORDER BY s.n, a.i",
        )
        .bind(&kind)
        .bind(&version)
        .bind(&metadata)
        .bind(from + 1)
        .bind(to)
        .bind(PER_AGENCY)
        .execute(db)
        .await
        .unwrap();
        from = to;
        eprintln!(
            "replay: writing the event store: {}/{} events",
            have + from * PER_AGENCY,
            have + agencies * PER_AGENCY
        );
    }
    sqlx::query("ALTER TABLE events ENABLE TRIGGER events_relay_enqueue")
        .execute(db)
        .await
        .unwrap();
    sqlx::query("VACUUM ANALYZE events")
        .execute(db)
        .await
        .unwrap();
    let generated_in = started.elapsed().as_secs_f64();
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(db)
        .await
        .unwrap();
    eprintln!("replay: eriop-projections rebuild over {events} events...");
    let mut rebuild = stack.service("rebuild", "eriop-projections", &["rebuild"]);
    let started = Instant::now();
    rebuild.start();
    let status = crate::wait::until("the rebuild", Duration::from_secs(3600), || {
        let exited = rebuild.exited();
        async move { exited }
    })
    .await;
    let seconds = started.elapsed().as_secs_f64();
    assert!(
        status.ends_with("exit status: 0"),
        "{status}; see {}",
        rebuild.log_path().display()
    );
    let events = u64::try_from(events).unwrap_or(0);
    Replay {
        events,
        seconds,
        per_second: events as f64 / seconds.max(1e-3),
        generated_in,
    }
}
