//! The durable pull consumer of `TELEMETRY`, committing in groups.

use eriop_nats::NatsError;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, AckKind};
use eriop_nats::streams::durable_messages;
use eriop_nats::traffic::TelemetryBatch;
use eriop_nats::{Stream, Topology};
use futures::StreamExt;
use sqlx::PgPool;

use super::{copy, Row, NAME};
use crate::consumer::{nats, ConsumerError};

pub struct TelemetryConsumer {
    pub pool: PgPool,
    pub js: jetstream::Context,
    pub topology: Topology,
    /// At most this many JetStream messages per database transaction.
    pub max_messages: usize,
    /// After the first message, gather more for at most this long.
    pub max_delay: Duration,
}

impl TelemetryConsumer {
    /// Consumes until an error; the caller retries with backoff.
    pub async fn consume(&self) -> Result<(), ConsumerError> {
        let mut messages = durable_messages(
            &self.js,
            &self.topology,
            Stream::Telemetry,
            pull::Config {
                durable_name: Some(NAME.to_owned()),
                description: Some("telemetry table".to_owned()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 20_000,
                ..Default::default()
            },
            self.max_messages,
        )
        .await
        .map_err(nats)?;
        tracing::info!(projection = NAME, "consuming");
        loop {
            let Some(first) = messages.next().await else {
                return Err(NatsError::Ended("the TELEMETRY message stream").into());
            };
            let mut batch = vec![first.map_err(nats)?];
            let deadline = tokio::time::Instant::now() + self.max_delay;
            while batch.len() < self.max_messages {
                match tokio::time::timeout_at(deadline, messages.next()).await {
                    Ok(Some(message)) => batch.push(message.map_err(nats)?),
                    Ok(None) | Err(_) => break,
                }
            }
            self.handle(batch).await?;
        }
    }

    async fn handle(&self, batch: Vec<jetstream::Message>) -> Result<(), ConsumerError> {
        let mut rows = Vec::new();
        let mut last_sequence = 0;
        for message in &batch {
            last_sequence =
                last_sequence.max(message.info().map(|i| i.stream_sequence).unwrap_or(0));
            match serde_json::from_slice::<TelemetryBatch>(&message.payload) {
                Ok(decoded) => {
                    for record in &decoded.records {
                        match Row::from_record(decoded.agency_id, record) {
                            Ok(row) => rows.push(row),
                            Err(e) => {
                                self.dead_letter(
                                    message,
                                    serde_json::to_vec(record).unwrap_or_default(),
                                    e.to_string(),
                                )
                                .await?
                            }
                        }
                    }
                }
                Err(e) => {
                    self.dead_letter(
                        message,
                        message.payload.to_vec(),
                        format!("not a telemetry batch: {e}"),
                    )
                    .await?
                }
            }
        }
        if let Err(e) = self.write(&rows, last_sequence).await {
            // Ask for them again in a second rather than after the ack wait: the database is
            // usually back soon, and nothing was committed.
            for message in &batch {
                let _ = message
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                    .await;
            }
            return Err(e);
        }
        for message in &batch {
            message.ack().await.map_err(nats)?;
        }
        tracing::debug!(
            projection = NAME,
            messages = batch.len(),
            rows = rows.len(),
            "committed"
        );
        Ok(())
    }

    /// Rows, latest values and checkpoint, in one transaction.
    async fn write(&self, rows: &[Row], last_sequence: u64) -> Result<(), ConsumerError> {
        let mut tx = crate::begin_all_agencies(&self.pool).await?;
        if !rows.is_empty() {
            // A temporary table lives as long as the pooled connection; its rows as long as
            // the transaction.
            sqlx::query(
                "CREATE TEMP TABLE IF NOT EXISTS telemetry_staging
                   (time timestamptz, agency_id uuid, device_id uuid, function_id text,
                    attribute text, value_double double precision, value_text text, value_json jsonb)
                   ON COMMIT DELETE ROWS",
            )
            .execute(&mut *tx)
            .await?;
            let data = copy::encode(rows).map_err(|e| ConsumerError::Encode(e.to_string()))?;
            let mut sink = tx
                .copy_in_raw(&format!(
                    "COPY telemetry_staging ({}) FROM STDIN (FORMAT binary)",
                    copy::COLUMNS
                ))
                .await?;
            sink.send(data.freeze()).await?;
            sink.finish().await?;
            sqlx::query(&format!(
                "INSERT INTO telemetry ({cols})
                 SELECT DISTINCT ON (device_id, function_id, attribute, time) {cols}
                   FROM telemetry_staging
                 ON CONFLICT (device_id, function_id, attribute, time) DO NOTHING",
                cols = copy::COLUMNS
            ))
            .execute(&mut *tx)
            .await?;
            // The latest value only moves forward in device time: a late sample is stored
            // above, but does not replace a newer value here.
            sqlx::query(
                "INSERT INTO device_latest (device_id, function_id, attribute, agency_id, time,
                                            value_double, value_text, value_json)
                 SELECT DISTINCT ON (device_id, function_id, attribute)
                        device_id, function_id, attribute, agency_id, time, value_double, value_text, value_json
                   FROM telemetry_staging
                  ORDER BY device_id, function_id, attribute, time DESC
                 ON CONFLICT (device_id, function_id, attribute) DO UPDATE
                    SET time = excluded.time, value_double = excluded.value_double,
                        value_text = excluded.value_text, value_json = excluded.value_json
                  WHERE excluded.time > device_latest.time",
            )
            .execute(&mut *tx)
            .await?;
        }
        crate::checkpoint::save(&mut tx, NAME, last_sequence).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A record (or message) that can never become a row: to `DLQ` with the reason. The
    /// message's other records are still written.
    async fn dead_letter(
        &self,
        message: &jetstream::Message,
        payload: Vec<u8>,
        reason: String,
    ) -> Result<(), ConsumerError> {
        tracing::error!(projection = NAME, %reason, subject = %message.subject, "dead-lettered");
        let letter = eriop_nats::dlq::DeadLetter::new(reason, message.subject.as_str(), payload);
        eriop_nats::dlq::publish(
            &self.js,
            self.topology.dlq_subject(&format!("projections.{NAME}")),
            letter,
        )
        .await
        .map_err(nats)?;
        Ok(())
    }
}
