//! `/api/v1/device-classes` and `/api/v1/devices`: the device registry, its bulk import, the
//! commands sent to devices; and the workers that keep devices' liveness and carry commands
//! to the bridge.

pub mod bulk;
pub mod classes;
pub mod commands;
pub mod registries;
pub mod registry;
pub mod supervisor;
mod view;

use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{AggregateError, CqrsFramework};
use eriop_domain::device::{Device, DeviceClass, DeviceCommand, DeviceError, Registry};
use postgres_es::PostgresEventRepository;
use uuid::Uuid;

use crate::audit::Audit;
use crate::auth::Caller;
use crate::edge::RequestId;
use crate::error::ApiError;
use crate::paging::{await_version, ReadModel};
use crate::state::AppState;

pub type DeviceClassCqrs =
    CqrsFramework<DeviceClass, PersistedEventStore<PostgresEventRepository, DeviceClass>>;
pub type DeviceCqrs = CqrsFramework<Device, PersistedEventStore<PostgresEventRepository, Device>>;
pub type RegistryCqrs =
    CqrsFramework<Registry, PersistedEventStore<PostgresEventRepository, Registry>>;

/// How often a device command is decided again after a concurrent write to its aggregate.
const MAX_CONFLICT_RETRIES: u32 = 5;

/// Devices record every command and status change: a snapshot every 50 events keeps their
/// loading short.
pub const DEVICE_SNAPSHOT_EVERY: usize = 50;

pub(crate) fn device_error(e: AggregateError<DeviceError>) -> ApiError {
    match e {
        AggregateError::UserError(DeviceError::NotFound) => {
            ApiError::NotFound("no such device in your agency".into())
        }
        AggregateError::UserError(other) => ApiError::Conflict(other.to_string()),
        AggregateError::AggregateConflict => {
            ApiError::Conflict("the device was changed at the same time; retry".into())
        }
        other => ApiError::Unavailable(other.to_string()),
    }
}

/// Runs a command on a device for the caller, then waits until the read model shows it.
pub(crate) async fn execute(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    command: DeviceCommand,
    request_id: &RequestId,
) -> Result<(), ApiError> {
    let audit = Audit::by(caller, &request_id.0);
    // The device supervisor writes to the same aggregate (online, offline, a device's
    // reply): optimistic concurrency refuses the later commit, and the command, decided
    // again on the fresh state, is simply retried. A caller never sees that race.
    let mut attempts = 0;
    loop {
        let metadata = audit.metadata(command.name());
        match state
            .devices()
            .execute_with_metadata(&id.to_string(), command.clone(), metadata)
            .await
        {
            Err(AggregateError::AggregateConflict) if attempts < MAX_CONFLICT_RETRIES => {
                attempts += 1;
            }
            outcome => {
                outcome.map_err(device_error)?;
                break;
            }
        }
    }
    await_latest(state, ReadModel::Devices, "device", id).await
}

/// Read your writes: waits (bounded) until `model` shows the aggregate's last event.
pub(crate) async fn await_latest(
    state: &AppState,
    model: ReadModel,
    aggregate_type: &str,
    id: Uuid,
) -> Result<(), ApiError> {
    let version: Option<i64> = sqlx::query_scalar(
        "SELECT max(sequence) FROM events WHERE aggregate_type = $1 AND aggregate_id = $2",
    )
    .bind(aggregate_type)
    .bind(id.to_string())
    .fetch_one(state.pool())
    .await?;
    await_version(
        state.pool(),
        model,
        id,
        version.unwrap_or(0),
        state.read_your_writes_timeout(),
    )
    .await?;
    Ok(())
}

pub(crate) fn agency_of(caller: &Caller) -> Result<eriop_domain::AgencyId, ApiError> {
    caller
        .agency_id()
        .parse()
        .map_err(|_| ApiError::Unauthorized("the token names no agency"))
}

/// Checks that `id` is a live device of the caller's agency (404 otherwise).
pub(crate) async fn registry_view(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<(), ApiError> {
    view::find(state, caller, id).await.map(|_| ())
}
