//! The bridge's report of its MQTT link (see `eriop_nats::links`).

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use eriop_nats::links::{mqtt_link_key, LinkReport, LINK_REPORT_TTL};
use tokio::sync::watch;

const REFRESH: Duration = Duration::from_secs(5);

pub(crate) struct Reporter {
    redis: redis::Client,
    key: String,
    state: watch::Sender<bool>,
    status: std::sync::Arc<crate::BridgeStatus>,
}

impl Reporter {
    pub(crate) fn new(
        redis: redis::Client,
        prefix: &str,
        client_id: &str,
        status: std::sync::Arc<crate::BridgeStatus>,
    ) -> Self {
        Self {
            redis,
            key: mqtt_link_key(prefix, client_id),
            state: watch::channel(false).0,
            status,
        }
    }

    pub(crate) fn state(&self) -> watch::Sender<bool> {
        self.state.clone()
    }

    /// Writes the state at once when it changes, and every few seconds otherwise.
    pub(crate) async fn run(&self) {
        let mut changes = self.state.subscribe();
        let mut connection = None;
        loop {
            let report = LinkReport {
                up: *changes.borrow_and_update(),
                at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
                last_message_at: self.status.last_message_ms().and_then(|ms| {
                    chrono::DateTime::from_timestamp_millis(ms)
                        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
                }),
                messages: self.status.messages(),
                samples: self.status.samples(),
                dead_lettered: self.status.dead_lettered(),
            };
            if let Err(e) = self.write(&mut connection, &report).await {
                tracing::warn!(error = %e, "cannot report the MQTT link to Redis, will retry");
                connection = None;
            }
            let _ = tokio::time::timeout(REFRESH, changes.changed()).await;
        }
    }

    async fn write(
        &self,
        connection: &mut Option<redis::aio::MultiplexedConnection>,
        report: &LinkReport,
    ) -> Result<(), redis::RedisError> {
        if connection.is_none() {
            *connection = Some(self.redis.get_multiplexed_async_connection().await?);
        }
        let Some(conn) = connection.as_mut() else {
            return Ok(());
        };
        let body = serde_json::to_string(report).unwrap_or_default();
        redis::cmd("SET")
            .arg(&self.key)
            .arg(body)
            .arg("PX")
            .arg(u64::try_from(LINK_REPORT_TTL.as_millis()).unwrap_or(15_000))
            .query_async::<()>(conn)
            .await
    }
}
