//! Given / when / then: the device registry's rules.

use cqrs_es::test::TestFramework;
use uuid::Uuid;

use super::*;
use crate::{AgencyId, Timestamp};

type DeviceTest = TestFramework<Device>;

fn registered() -> DeviceEvent {
    DeviceEvent::DeviceRegistered {
        id: Uuid::from_u128(1),
        agency_id: AgencyId::from_uuid(Uuid::from_u128(2)),
        class_id: Uuid::from_u128(3),
        functions: vec![FunctionDesc::parse("lampMonitor001", "LampMonitorFunction").unwrap()],
        fundamentum: FundamentumId::parse("reg-1", "SN-1").unwrap(),
        name: "Pole 1".into(),
        offline_after_secs: None,
    }
}

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

#[test]
fn liveness_records_transitions_only() {
    DeviceTest::with(())
        .given(vec![registered()])
        .when(DeviceCommand::MarkOnline { at: at(10) })
        .then_expect_events(vec![DeviceEvent::DeviceCameOnline { at: at(10) }]);
    DeviceTest::with(())
        .given(vec![
            registered(),
            DeviceEvent::DeviceCameOnline { at: at(10) },
        ])
        .when(DeviceCommand::MarkOnline { at: at(20) })
        .then_expect_events(vec![]);
    DeviceTest::with(())
        .given(vec![registered()])
        .when(DeviceCommand::MarkOffline {
            at: at(20),
            last_activity: None,
        })
        .then_expect_events(vec![]);
    DeviceTest::with(())
        .given(vec![
            registered(),
            DeviceEvent::DeviceCameOnline { at: at(10) },
        ])
        .when(DeviceCommand::MarkOffline {
            at: at(30),
            last_activity: Some(at(10)),
        })
        .then_expect_events(vec![DeviceEvent::DeviceWentOffline {
            at: at(30),
            last_activity: Some(at(10)),
        }]);
}

#[test]
fn a_command_moves_through_its_statuses_and_stops_at_the_final_one() {
    let issued = DeviceEvent::CommandIssued {
        command_id: 7,
        request: DeviceRequest::fundamentum("reboot", serde_json::json!({})).unwrap(),
    };
    DeviceTest::with(())
        .given(vec![registered(), issued.clone()])
        .when(DeviceCommand::RecordCommandStatus {
            command_id: 7,
            status: CommandStatus::Ongoing,
            message: None,
        })
        .then_expect_events(vec![DeviceEvent::CommandStatusChanged {
            command_id: 7,
            status: CommandStatus::Ongoing,
            message: None,
        }]);
    DeviceTest::with(())
        .given(vec![
            registered(),
            issued.clone(),
            DeviceEvent::CommandStatusChanged {
                command_id: 7,
                status: CommandStatus::Success,
                message: None,
            },
        ])
        .when(DeviceCommand::RecordCommandStatus {
            command_id: 7,
            status: CommandStatus::Retry,
            message: None,
        })
        .then_expect_events(vec![]);
    DeviceTest::with(())
        .given(vec![registered()])
        .when(DeviceCommand::RecordCommandStatus {
            command_id: 8,
            status: CommandStatus::Success,
            message: None,
        })
        .then_expect_error(DeviceError::UnknownCommand(8));
}

#[test]
fn a_decommissioned_device_takes_no_command() {
    DeviceTest::with(())
        .given(vec![registered(), DeviceEvent::DeviceDecommissioned])
        .when(DeviceCommand::IssueCommand {
            command_id: 1,
            request: DeviceRequest::fundamentum("reboot", serde_json::json!({})).unwrap(),
        })
        .then_expect_error(DeviceError::Decommissioned);
}

#[test]
fn values_are_parsed_not_validated() {
    assert!(FundamentumId::parse("reg", "a/b").is_err());
    assert!(FundamentumId::parse("reg", "sn+1").is_err());
    assert!(FunctionId::parse("lamp.1").is_err());
    assert!(FunctionDesc::parse("f1", "NoSuchFunction").is_err());
    assert!(OfflineAfter::seconds(0).is_err());
    assert!(DeviceRequest::light_override(Some(101), None, None, at(0)).is_err());
    assert!(DeviceRequest::light_override(Some(50), Some(at(5)), None, at(10)).is_err());
    assert!(DeviceRequest::fundamentum("Reboot!", serde_json::json!({})).is_err());
}

#[test]
fn states_are_typed_by_the_class_and_kept_when_they_do_not_fit() {
    let t = talq::attribute_type("LampMonitorFunction", "activePower");
    let v = talq::typed_value(t, &serde_json::json!(41.5));
    assert_eq!(v.attribute.kind, "AttributeFloat");
    assert_eq!(v.number, Some(41.5));
    let v = talq::typed_value(t, &serde_json::json!("broken"));
    assert!(v.mistyped);
    assert_eq!(v.text.as_deref(), Some("broken"));
    let v = talq::typed_value(None, &serde_json::json!({"x": 1}));
    assert_eq!(v.attribute.kind, "Attribute");
}

#[test]
fn a_timeout_back_to_the_class_default_survives_the_event_store() {
    let refused = Device::default()
        .decide(DeviceCommand::Update {
            name: None,
            offline_after: Some(None),
        })
        .unwrap_err();
    assert_eq!(refused, DeviceError::NotFound);
    let mut device = Device::default();
    cqrs_es::Aggregate::apply(&mut device, registered());
    cqrs_es::Aggregate::apply(
        &mut device,
        DeviceEvent::DeviceUpdated {
            name: None,
            offline_after: Some(Timeout::Seconds(120)),
        },
    );
    let events = device
        .decide(DeviceCommand::Update {
            name: None,
            offline_after: Some(None),
        })
        .unwrap();
    // Stored as JSON and read back, the change is still "back to the class's timeout".
    let json = serde_json::to_value(&events).unwrap();
    let back: Vec<DeviceEvent> = serde_json::from_value(json).unwrap();
    assert_eq!(
        back,
        vec![DeviceEvent::DeviceUpdated {
            name: None,
            offline_after: Some(Timeout::ClassDefault),
        }]
    );
}
