//! The device supervisor: liveness, and the forwarding of device commands to the bridge.
//!
//! * Liveness (DESIGN.md rule 8: the domain gets `now` as an input). Any message from a
//!   device is activity (the bridge reports it on `DEVICE`). Each device has its own timer
//!   (a `DelayQueue` entry reset by each activity), not a coarse sweep: when it fires the
//!   device goes offline (an event, plus a TALQ `communicationFailure` record on
//!   `TELEMETRY`); the next activity brings it back online. Only transitions are events.
//! * Reconciliation: on taking over (start, restart, failover) the supervisor reads every
//!   device's status and last activity and fixes both ways: a device marked online whose
//!   activity is too old goes offline at once, so none stays falsely online.
//! * Commands: a `CommandIssued` event (from `EVENTS`) becomes a `DownlinkCommand` on
//!   `COMMANDS` (de-duplicated by command id); the device's replies (from `DEVICE`) become
//!   status changes.
//! * One supervisor is active at a time (a PostgreSQL advisory lock, as for the relay):
//!   several would each see part of the activity.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, consumer::DeliverPolicy};
use chrono::SecondsFormat;
use cqrs_es::AggregateError;
use eriop_domain::device::{talq, CommandStatus, DeviceCommand, DeviceEvent};
use eriop_domain::Timestamp;
use eriop_nats::backoff::Backoff;
use eriop_nats::streams::durable_messages;
use eriop_nats::traffic::{self, CommandReply, DeviceActivity, TelemetryBatch};
use eriop_nats::{NatsError, StoredEvent, Stream, Topology};
use futures::StreamExt;
use sqlx::postgres::PgConnectOptions;
use tokio_util::time::DelayQueue;
use uuid::Uuid;

use crate::services::auth::{Clock, SystemClock};
use crate::state::AppState;

mod forward;
mod watch;

use watch::{schedule, watch_of, Run, WatchRow, WATCH_SELECT};

/// "ERIOPSUP" as a big-endian i64.
const LOCK_KEY: i64 = 0x4552_494f_5053_5550;
const NAME: &str = "device-supervisor";
const ACTOR: &str = "eriop-device-supervisor";

#[derive(Debug, thiserror::Error)]
enum SupervisorError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("NATS: {0}")]
    Nats(#[from] NatsError),
    #[error("event store: {0}")]
    Store(String),
}

fn nats(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> SupervisorError {
    SupervisorError::Nats(NatsError::client(e))
}

fn rfc3339(t: Timestamp) -> String {
    chrono::DateTime::from_timestamp_millis(t.millis())
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub struct Supervisor {
    state: AppState,
    /// Time is an input (DESIGN.md rule 8): liveness is judged by this clock.
    clock: Arc<dyn Clock>,
    connect: PgConnectOptions,
    js: jetstream::Context,
    topology: Topology,
}

impl Supervisor {
    pub fn new(state: AppState, js: jetstream::Context, topology: Topology) -> Self {
        let connect = (*state.pool().connect_options()).clone();
        Self {
            state,
            clock: Arc::new(SystemClock),
            connect,
            js,
            topology,
        }
    }

    pub fn set_clock(&mut self, clock: Arc<dyn Clock>) {
        self.clock = clock;
    }

    /// Runs forever: standby, active, and back to standby after losing a dependency.
    pub async fn run(self) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            if let Err(e) = self.lead().await {
                tracing::warn!(error = %e, attempt = backoff.attempts(), "device supervisor interrupted, will retry");
                backoff.wait().await;
            }
        }
    }

    async fn lead(&self) -> Result<(), SupervisorError> {
        let mut lock =
            eriop_nats::db::leader_lock(&self.connect, LOCK_KEY, Duration::from_secs(1)).await?;
        let mut device_messages = self.consumer(Stream::Device, None).await?;
        let mut event_messages = self
            .consumer(Stream::Events, Some(self.topology.events_of("device")))
            .await?;
        let mut run = Run {
            watches: HashMap::new(),
            timers: DelayQueue::new(),
        };
        self.reconcile(&mut run).await?;
        tracing::info!(devices = run.watches.len(), "device supervisor active");
        let mut keepalive = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                _ = keepalive.tick() => {
                    sqlx::query("SELECT 1").execute(&mut lock).await?;
                }
                message = device_messages.next() => {
                    let message = message.ok_or(NatsError::Ended("the DEVICE consumer"))?.map_err(nats)?;
                    self.on_device_message(&mut run, &message).await?;
                    message.ack().await.map_err(nats)?;
                }
                message = event_messages.next() => {
                    let message = message.ok_or(NatsError::Ended("the EVENTS consumer"))?.map_err(nats)?;
                    self.on_event(&mut run, &message).await?;
                    message.ack().await.map_err(nats)?;
                }
                Some(expired) = std::future::poll_fn(|cx| run.timers.poll_expired(cx)), if !run.timers.is_empty() => {
                    self.on_timer(&mut run, expired.into_inner()).await?;
                }
            }
        }
    }

    async fn consumer(
        &self,
        which: Stream,
        filter: Option<String>,
    ) -> Result<jetstream::consumer::pull::Stream, SupervisorError> {
        durable_messages(
            &self.js,
            &self.topology,
            which,
            pull::Config {
                durable_name: Some(NAME.to_owned()),
                description: Some("device liveness and command forwarding".into()),
                filter_subject: filter.unwrap_or_default(),
                // A new supervisor starts from now: replaying old commands would send
                // them to devices again. Reconciliation covers what came before.
                deliver_policy: DeliverPolicy::New,
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 10_000,
                ..Default::default()
            },
            200,
        )
        .await
        .map_err(nats)
    }

    /// Every live device's status against its last activity: both ways fixed.
    async fn reconcile(&self, run: &mut Run) -> Result<(), SupervisorError> {
        let mut tx = crate::tenancy::begin(self.state.pool(), crate::tenancy::Scope::All).await?;
        let rows: Vec<WatchRow> = sqlx::query_as(WATCH_SELECT).fetch_all(&mut *tx).await?;
        drop(tx);
        let now = self.clock.now();
        for row in rows {
            let id = row.id;
            let watch = watch_of(row);
            let fresh = watch
                .last_activity
                .is_some_and(|t| t.millis() + watch.timeout_ms > now.millis());
            let online = watch.online;
            run.watches.insert(id, watch);
            if fresh {
                if !online {
                    self.transition(run, id, true, now).await?;
                }
                schedule(run, id, now);
            } else if online {
                self.transition(run, id, false, now).await?;
            }
        }
        Ok(())
    }

    /// The watch of `id`, loaded from the registry when the supervisor has not seen it yet.
    async fn watch(&self, run: &mut Run, id: Uuid) -> Result<bool, SupervisorError> {
        if run.watches.contains_key(&id) {
            return Ok(true);
        }
        let mut tx = crate::tenancy::begin(self.state.pool(), crate::tenancy::Scope::All).await?;
        let row: Option<WatchRow> = sqlx::query_as(&format!("{WATCH_SELECT} AND d.id = $1"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        Ok(match row {
            Some(row) => {
                run.watches.insert(id, watch_of(row));
                true
            }
            None => false,
        })
    }

    async fn on_device_message(
        &self,
        run: &mut Run,
        message: &jetstream::Message,
    ) -> Result<(), SupervisorError> {
        let kind = message.subject.rsplit('.').next().unwrap_or_default();
        match kind {
            traffic::ACTIVITY => match serde_json::from_slice::<DeviceActivity>(&message.payload) {
                Ok(activity) => self.on_activity(run, activity).await,
                Err(e) => {
                    tracing::error!(error = %e, "undecodable device activity, skipped");
                    Ok(())
                }
            },
            traffic::COMMAND_STATUS => {
                match serde_json::from_slice::<CommandReply>(&message.payload) {
                    Ok(reply) => self.on_reply(reply).await,
                    Err(e) => {
                        tracing::error!(error = %e, "undecodable command reply, skipped");
                        Ok(())
                    }
                }
            }
            _ => Ok(()),
        }
    }

    async fn on_activity(
        &self,
        run: &mut Run,
        activity: DeviceActivity,
    ) -> Result<(), SupervisorError> {
        // Known before this activity is stored: what it changes is judged against the past.
        let id = activity.device_id;
        let known = self.watch(run, id).await?;
        let at = |ms: Option<i64>| ms.and_then(chrono::DateTime::from_timestamp_millis);
        let mut tx = crate::tenancy::begin(self.state.pool(), crate::tenancy::Scope::All).await?;
        sqlx::query(
            "INSERT INTO device_activity (device_id, agency_id, last_activity, last_heartbeat, uptime_secs)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (device_id) DO UPDATE SET
                last_activity = greatest(device_activity.last_activity, excluded.last_activity),
                uptime_secs = CASE WHEN excluded.last_heartbeat >= coalesce(device_activity.last_heartbeat, '-infinity')
                                   THEN coalesce(excluded.uptime_secs, device_activity.uptime_secs)
                                   ELSE device_activity.uptime_secs END,
                last_heartbeat = greatest(device_activity.last_heartbeat, excluded.last_heartbeat)",
        )
        .bind(activity.device_id)
        .bind(activity.agency_id)
        .bind(at(Some(activity.at_ms)))
        .bind(at(activity.heartbeat_at_ms))
        .bind(activity.uptime_secs.and_then(|u| i64::try_from(u).ok()))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if !known {
            return Ok(()); // decommissioned meanwhile
        }
        let at = Timestamp::from_millis(activity.at_ms);
        let Some(watch) = run.watches.get_mut(&id) else {
            return Ok(());
        };
        if watch.last_activity.is_some_and(|last| last >= at) {
            return Ok(());
        }
        watch.last_activity = Some(at);
        let now = self.clock.now();
        let back = !watch.online && at.millis() + watch.timeout_ms > now.millis();
        schedule(run, id, now);
        if back {
            self.transition(run, id, true, at).await?;
        }
        Ok(())
    }

    async fn on_reply(&self, reply: CommandReply) -> Result<(), SupervisorError> {
        // Typed by the bridge: an unknown status went to the DLQ there.
        let command = DeviceCommand::RecordCommandStatus {
            command_id: reply.command_id,
            status: CommandStatus::from(reply.status),
            message: reply.message,
        };
        self.execute(reply.agency_id, reply.device_id, command)
            .await
    }

    async fn on_event(
        &self,
        run: &mut Run,
        message: &jetstream::Message,
    ) -> Result<(), SupervisorError> {
        let Ok(event) = serde_json::from_slice::<StoredEvent>(&message.payload) else {
            return Ok(());
        };
        let (Ok(id), Ok(payload)) = (
            Uuid::parse_str(&event.aggregate_id),
            serde_json::from_value::<DeviceEvent>(event.payload.clone()),
        ) else {
            return Ok(());
        };
        match payload {
            DeviceEvent::CommandIssued {
                command_id,
                request,
            } => {
                if !self.watch(run, id).await? {
                    return Ok(());
                }
                let Some(watch) = run.watches.get(&id) else {
                    return Ok(());
                };
                self.forward(id, watch, command_id, request, &event).await?;
            }
            DeviceEvent::DeviceUpdated {
                offline_after: Some(timeout),
                ..
            } => {
                if let Some(watch) = run.watches.get_mut(&id) {
                    let secs = match timeout.seconds() {
                        Some(secs) => i64::from(secs),
                        None => {
                            let mut tx = crate::tenancy::begin(
                                self.state.pool(),
                                crate::tenancy::Scope::All,
                            )
                            .await?;
                            let class: i32 = sqlx::query_scalar(
                                "SELECT offline_after_secs FROM device_classes WHERE id = $1",
                            )
                            .bind(watch.class_id)
                            .fetch_one(&mut *tx)
                            .await?;
                            i64::from(class)
                        }
                    };
                    watch.timeout_ms = secs * 1000;
                    if watch.online {
                        schedule(run, id, self.clock.now());
                    }
                }
            }
            DeviceEvent::DeviceDecommissioned => {
                if let Some(key) = run.watches.remove(&id).and_then(|w| w.timer) {
                    run.timers.remove(&key);
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn on_timer(&self, run: &mut Run, id: Uuid) -> Result<(), SupervisorError> {
        let now = self.clock.now();
        let Some(watch) = run.watches.get_mut(&id) else {
            return Ok(());
        };
        watch.timer = None;
        let silent = watch
            .last_activity
            .is_none_or(|t| t.millis() + watch.timeout_ms <= now.millis());
        if watch.online && silent {
            self.transition(run, id, false, now).await?;
        } else if watch.online {
            // Early by this clock (timers run in real time): look again when it is due.
            schedule(run, id, now);
        }
        Ok(())
    }

    /// Records online or offline, and the TALQ `communicationFailure` record that goes with it.
    async fn transition(
        &self,
        run: &mut Run,
        id: Uuid,
        online: bool,
        at: Timestamp,
    ) -> Result<(), SupervisorError> {
        let Some(watch) = run.watches.get_mut(&id) else {
            return Ok(());
        };
        let command = if online {
            DeviceCommand::MarkOnline { at }
        } else {
            DeviceCommand::MarkOffline {
                at,
                last_activity: watch.last_activity,
            }
        };
        watch.online = online;
        let agency_id = watch.agency_id;
        let function = watch
            .functions
            .iter()
            .find(|f| f.function_type == "CommunicationFunction")
            .map(|f| f.id.as_str().to_owned())
            .unwrap_or_default();
        self.execute(agency_id, id, command).await?;
        tracing::info!(device_id = %id, online, "device liveness changed");
        let value = talq::typed_value(
            talq::attribute_type("CommunicationFunction", "communicationFailure"),
            &serde_json::json!(!online),
        );
        let batch = TelemetryBatch {
            agency_id,
            records: vec![talq::attribute_log_data(
                id,
                &function,
                "communicationFailure",
                &value,
                &rfc3339(at),
            )],
        };
        self.js
            .publish(
                self.topology.telemetry_subject(&agency_id.to_string()),
                serde_json::to_vec(&batch).map_err(nats)?.into(),
            )
            .await
            .map_err(nats)?
            .await
            .map_err(nats)?;
        Ok(())
    }

    async fn execute(
        &self,
        agency_id: Uuid,
        id: Uuid,
        command: DeviceCommand,
    ) -> Result<(), SupervisorError> {
        let agency = agency_id.to_string();
        let audit = crate::services::audit::Audit {
            actor: ACTOR,
            agency_id: &agency,
            request_id: NAME,
        };
        let metadata = audit.metadata(command.name());
        let mut attempts = 0;
        loop {
            match self
                .state
                .devices()
                .execute_with_metadata(&id.to_string(), command.clone(), metadata.clone())
                .await
            {
                Ok(()) => return Ok(()),
                // An operator changed the device at the same moment: load it again.
                Err(AggregateError::AggregateConflict) if attempts < 3 => attempts += 1,
                // Refused by the device's rules (a reply to an unknown command, a device
                // decommissioned meanwhile): nothing to retry, nothing to record.
                Err(AggregateError::UserError(e)) => {
                    tracing::warn!(device_id = %id, reason = %e, "device supervisor: command refused, skipped");
                    return Ok(());
                }
                Err(e) => return Err(SupervisorError::Store(e.to_string())),
            }
        }
    }
}
