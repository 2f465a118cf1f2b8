//! The API side of a fault run: a steady stream of commands as operators send them (new
//! agencies, as the platform administrator, and device commands, which the simulated
//! lights answer), each remembered only when the gateway accepted it (201 or 202).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::watch;

/// What the gateway accepted, by phase.
#[derive(Default, Debug)]
pub struct Accepted {
    /// (phase, agency id, name)
    pub agencies: Vec<(u32, String, String)>,
    /// (phase, index of the light, command id)
    pub device_commands: Vec<(u32, usize, i64)>,
    /// Answers no outage explains (a 4xx other than 429): a bug, reported by the run.
    pub anomalies: Vec<String>,
    /// Requests refused or unanswered while something was down, by phase (not accepted:
    /// the client knows to send them again).
    pub refused: std::collections::BTreeMap<u32, u64>,
}

pub type Shared = Arc<Mutex<Accepted>>;

pub fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Accepted> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Classifies an answer: accepted (with its body), refused (5xx, 429, no answer), or an
/// anomaly.
async fn outcome(
    shared: &Shared,
    phase: u32,
    what: &str,
    sent: Result<reqwest::Response, reqwest::Error>,
) -> Option<Value> {
    let response = match sent {
        Ok(r) => r,
        Err(_) => {
            *lock(shared).refused.entry(phase).or_default() += 1;
            return None;
        }
    };
    let status = response.status().as_u16();
    match status {
        201 | 202 => response.json().await.ok(),
        429 | 500..=599 => {
            *lock(shared).refused.entry(phase).or_default() += 1;
            None
        }
        _ => {
            let body = response.text().await.unwrap_or_default();
            lock(shared)
                .anomalies
                .push(format!("{what}: {status} {body}"));
            None
        }
    }
}

/// Sends one agency creation every `every` and one device command every second `every`
/// (round robin over `lights`) while a phase runs.
pub async fn run(
    http: reqwest::Client,
    url: String,
    token: String,
    lights: Vec<String>,
    every: Duration,
    mut phase: watch::Receiver<Option<u32>>,
    shared: Shared,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        let Some(current) = *phase.borrow_and_update() else {
            if phase.changed().await.is_err() {
                return;
            }
            continue;
        };
        n += 1;
        let name = format!("Faults {current}-{n}");
        let sent = http
            .request(Method::POST, format!("{url}/agencies"))
            .bearer_auth(&token)
            .json(&json!({ "name": name }))
            .send()
            .await;
        if let Some(body) = outcome(&shared, current, "POST /agencies", sent).await {
            if let Some(id) = body["id"].as_str() {
                lock(&shared)
                    .agencies
                    .push((current, id.to_owned(), name.clone()));
            }
        }
        if n.is_multiple_of(2) && !lights.is_empty() {
            let index = (n as usize / 2) % lights.len();
            let sent = http
                .request(
                    Method::POST,
                    format!("{url}/devices/{}/commands", lights[index]),
                )
                .bearer_auth(&token)
                .json(&json!({"type": "override", "level": n % 101, "ramp_seconds": 1}))
                .send()
                .await;
            if let Some(body) = outcome(&shared, current, "POST /devices/{id}/commands", sent).await
            {
                if let Some(id) = body["id"].as_i64() {
                    lock(&shared).device_commands.push((current, index, id));
                }
            }
        }
    }
}
