//! Liveness (the process answers) and readiness (each dependency answers, within a second).
//! Readiness names every dependency and its state, so an operator sees at once which is down.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use eriop_nats::links;
use redis::AsyncCommands;
use serde::Serialize;

use crate::state::AppState;

const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// What a gateway does while Redis is away (http/limits.rs), as readiness says it.
pub const REDIS_DOWN: &str =
    "rate limits are counted by each gateway alone (per-process limits) until Redis is back";

#[derive(Serialize)]
pub struct Check {
    status: &'static str,
    latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// What the dependency reports of itself (the bridges: traffic counters).
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct Readiness {
    status: &'static str,
    checks: BTreeMap<&'static str, Check>,
}

pub async fn live() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "live" }))
}

pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let (postgres, redis, nats, mqtt) = tokio::join!(
        check(async {
            sqlx::query("SELECT 1")
                .execute(state.pool())
                .await
                .map(|_| None)
                .map_err(|e| e.to_string())
        }),
        check(async {
            let mut conn = state
                .redis()
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map(|_| None)
                .map_err(|e| e.to_string())
        }),
        check(async {
            let client = state.nats();
            if client.connection_state() != async_nats::connection::State::Connected {
                return Err("not connected".to_owned());
            }
            client.flush().await.map_err(|e| e.to_string())?;
            streams_with_room(&state).await
        }),
        check(mqtt_link(&state)),
    );
    let mut redis = redis;
    if redis.status != "up" {
        let cause = redis.error.take().unwrap_or_default();
        redis.error = Some(format!("{cause}; {REDIS_DOWN}"));
    }
    let checks = BTreeMap::from([
        ("postgres", postgres),
        ("redis", redis),
        ("nats", nats),
        ("mqtt", mqtt),
    ]);
    let all_up = checks.values().all(|c| c.status == "up");
    for (name, c) in checks.iter().filter(|(_, c)| c.status != "up") {
        tracing::warn!(
            dependency = name,
            error = c.error.as_deref().unwrap_or(""),
            "not ready"
        );
    }
    let code = if all_up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let status = if all_up { "ready" } else { "unavailable" };
    (code, Json(Readiness { status, checks }))
}

/// `EVENTS` and `COMMANDS` refuse new messages when full (their discard policy is `new`, so
/// nothing accepted is dropped): readiness fails before that happens, naming the stream and
/// the setting to raise. Answers each stream's use as details.
async fn streams_with_room(state: &AppState) -> Result<Option<serde_json::Value>, String> {
    use eriop_nats::Stream;
    let js = async_nats::jetstream::new(state.nats().clone());
    let mut details = serde_json::Map::new();
    for which in [Stream::Events, Stream::Commands] {
        let name = state.topology().stream_name(which);
        // Not created yet (the relay creates the streams as it starts): nothing to fill.
        let Ok(mut stream) = js.get_stream(&name).await else {
            continue;
        };
        let info = stream.info().await.map_err(|e| format!("{name}: {e}"))?;
        let (used, max) = (info.state.bytes, info.config.max_bytes);
        details.insert(
            name.clone(),
            serde_json::json!({ "bytes": used, "max_bytes": max }),
        );
        let Ok(max) = u64::try_from(max) else {
            continue; // -1: unlimited
        };
        // Full when the largest message (1 MiB), or a sixteenth of a small stream, no longer fits.
        let margin = (max / 16).min(1024 * 1024);
        if used.saturating_add(margin) >= max {
            return Err(format!(
                "{name} is full ({used} of {max} bytes) and refuses new messages: raise ERIOP_STREAM_{}_MAX_BYTES (and the NATS server's max_file_store)",
                format!("{which:?}").to_uppercase()
            ));
        }
    }
    Ok(Some(serde_json::Value::Object(details)))
}

/// The MQTT link is the bridge's: up when at least one bridge reported it up within the
/// report's lifetime (see `eriop_nats::links`).
async fn mqtt_link(state: &AppState) -> Result<Option<serde_json::Value>, String> {
    let mut conn = state
        .redis()
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("cannot read the bridges' reports: {e}"))?;
    let pattern = links::mqtt_link_pattern(state.redis_prefix());
    let keys: Vec<String> = {
        let mut iter = conn
            .scan_match::<_, String>(pattern)
            .await
            .map_err(|e| e.to_string())?;
        let mut keys = Vec::new();
        while let Some(key) = iter.next_item().await {
            keys.push(key);
        }
        keys
    };
    if keys.is_empty() {
        return Err(format!(
            "no bridge has reported its link in the last {} s",
            links::LINK_REPORT_TTL.as_secs()
        ));
    }
    let reports: Vec<Option<String>> = conn.mget(&keys).await.map_err(|e| e.to_string())?;
    let up: Vec<links::LinkReport> = reports
        .iter()
        .flatten()
        .filter_map(|r| serde_json::from_str::<links::LinkReport>(r).ok())
        .filter(|r| r.up)
        .collect();
    if up.is_empty() {
        return Err("the bridge cannot reach the MQTT broker".to_owned());
    }
    let details = serde_json::json!({
        "bridges_up": up.len(),
        "messages": up.iter().map(|r| r.messages).sum::<u64>(),
        "samples": up.iter().map(|r| r.samples).sum::<u64>(),
        "dead_lettered": up.iter().map(|r| r.dead_lettered).sum::<u64>(),
        "last_message_at": up.iter().filter_map(|r| r.last_message_at.clone()).max(),
    });
    // Data flowing, not only a connection: the freshest message any bridge handed over.
    let max_silence = state.mqtt_max_silence();
    let last = up
        .iter()
        .filter_map(|r| r.last_message_at.as_deref())
        .filter_map(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .max();
    match last {
        Some(last) if !max_silence.is_zero() => {
            let age = chrono::Utc::now().signed_duration_since(last);
            let age = age.to_std().unwrap_or_default();
            if age > max_silence {
                return Err(format!(
                    "connected, but no MQTT message for {} s (ERIOP_MQTT_MAX_SILENCE_SECS={}): are devices publishing, is the subscription alive?",
                    age.as_secs(),
                    max_silence.as_secs()
                ));
            }
            Ok(Some(details))
        }
        // A bridge that never had a message (a new deployment) is not judged on silence.
        _ => Ok(Some(details)),
    }
}

async fn check(probe: impl Future<Output = Result<Option<serde_json::Value>, String>>) -> Check {
    let started = Instant::now();
    let outcome = tokio::time::timeout(CHECK_TIMEOUT, probe).await;
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match outcome {
        Ok(Ok(details)) => Check {
            status: "up",
            latency_ms,
            error: None,
            details,
        },
        Ok(Err(error)) => Check {
            status: "down",
            latency_ms,
            error: Some(error),
            details: None,
        },
        Err(_) => Check {
            status: "down",
            latency_ms,
            error: Some(format!("no answer within {} ms", CHECK_TIMEOUT.as_millis())),
            details: None,
        },
    }
}
