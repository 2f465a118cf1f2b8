//! `/api/v1/device-classes` and `/api/v1/devices`: the device registry, its bulk import, the
//! commands sent to devices; and the workers that keep devices' liveness and carry commands
//! to the bridge.

pub mod bulk;
pub mod classes;
pub mod commands;
pub mod registries;
pub mod registry;
mod view;

use cqrs_es::AggregateError;
use eriop_domain::device::{Device, DeviceClass, DeviceCommand, DeviceError, Registry};
use uuid::Uuid;

use crate::http::command::{self, Stored};
use crate::http::edge::RequestId;
use crate::http::error::ApiError;
use crate::http::paging::ReadModel;
use crate::http::AgencyScope;
use crate::services::audit::Audit;
use crate::services::auth::Caller;
use crate::services::event_log::EventLog;
use crate::state::AppState;

pub type DeviceClassCqrs = EventLog<DeviceClass>;
pub type DeviceCqrs = EventLog<Device>;
pub type RegistryCqrs = EventLog<Registry>;

/// Devices record every command and status change: a snapshot every 50 events keeps their
/// loading short.
pub const DEVICE_SNAPSHOT_EVERY: usize = 50;

pub(crate) fn device_error(e: AggregateError<DeviceError>) -> ApiError {
    command::refusal(e, "device in your agency")
}

/// Runs a command on a device for the caller (the device supervisor writes to the same
/// aggregate: the command path decides it again after such a race).
pub(crate) async fn execute(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    command: DeviceCommand,
    request_id: &RequestId,
) -> Result<Stored, ApiError> {
    let audit = Audit::by(caller, &request_id.0);
    command::execute(
        state,
        state.devices(),
        ReadModel::Devices,
        id,
        command,
        &audit,
        "device in your agency",
    )
    .await
}

/// Checks that `id` is a live device of the scope's agency (404 otherwise).
pub(crate) async fn registry_view(scope: &AgencyScope, id: Uuid) -> Result<(), ApiError> {
    view::find(scope, id).await.map(|_| ())
}
