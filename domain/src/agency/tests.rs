//! Given / when / then: the agency's rules, from past events and a command to new events or
//! a refusal.

use cqrs_es::test::TestFramework;
use uuid::Uuid;

use super::*;
use crate::AgencyId;

type AgencyTest = TestFramework<Agency>;

fn id() -> AgencyId {
    AgencyId::from_uuid(Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001))
}

fn name(raw: &str) -> AgencyName {
    AgencyName::parse(raw).unwrap()
}

fn created(raw: &str) -> AgencyEvent {
    AgencyEvent::AgencyCreated {
        id: id(),
        name: raw.to_owned(),
    }
}

#[test]
fn creating_a_new_agency_records_its_creation() {
    AgencyTest::with(())
        .given_no_previous_events()
        .when(AgencyCommand::Create {
            id: id(),
            name: name("  City of Laval "),
        })
        .then_expect_events(vec![created("City of Laval")]);
}

#[test]
fn creating_an_existing_agency_is_refused() {
    AgencyTest::with(())
        .given(vec![created("Laval")])
        .when(AgencyCommand::Create {
            id: id(),
            name: name("Laval"),
        })
        .then_expect_error(AgencyError::AlreadyExists);
}

#[test]
fn renaming_records_the_new_name() {
    AgencyTest::with(())
        .given(vec![created("Laval")])
        .when(AgencyCommand::Rename {
            name: name("Ville de Laval"),
        })
        .then_expect_events(vec![AgencyEvent::AgencyRenamed {
            name: "Ville de Laval".to_owned(),
        }]);
}

#[test]
fn renaming_to_the_same_name_records_nothing() {
    AgencyTest::with(())
        .given(vec![created("Laval")])
        .when(AgencyCommand::Rename {
            name: name("Laval"),
        })
        .then_expect_events(vec![]);
}

#[test]
fn commands_to_an_unknown_agency_are_refused() {
    for command in [
        AgencyCommand::Rename { name: name("x") },
        AgencyCommand::Suspend,
        AgencyCommand::Reactivate,
        AgencyCommand::Amend {
            name: None,
            status: Some(AgencyStatus::Suspended),
            mfa_required: None,
            device_quota: None,
            command_quota: None,
            telemetry_quota: None,
            telemetry_retention_days: None,
        },
    ] {
        AgencyTest::with(())
            .given_no_previous_events()
            .when(command)
            .then_expect_error(AgencyError::NotFound);
    }
}

#[test]
fn suspending_then_reactivating() {
    AgencyTest::with(())
        .given(vec![created("Laval")])
        .when(AgencyCommand::Suspend)
        .then_expect_events(vec![AgencyEvent::AgencySuspended]);
    AgencyTest::with(())
        .given(vec![created("Laval"), AgencyEvent::AgencySuspended])
        .when(AgencyCommand::Reactivate)
        .then_expect_events(vec![AgencyEvent::AgencyReactivated]);
}

#[test]
fn suspending_twice_or_reactivating_an_active_agency_is_refused() {
    AgencyTest::with(())
        .given(vec![created("Laval"), AgencyEvent::AgencySuspended])
        .when(AgencyCommand::Suspend)
        .then_expect_error(AgencyError::AlreadySuspended);
    AgencyTest::with(())
        .given(vec![created("Laval")])
        .when(AgencyCommand::Reactivate)
        .then_expect_error(AgencyError::NotSuspended);
}

#[test]
fn amending_decides_every_change_together() {
    AgencyTest::with(())
        .given(vec![created("Laval")])
        .when(AgencyCommand::Amend {
            name: Some(name("Laval 2")),
            status: Some(AgencyStatus::Suspended),
            mfa_required: Some(true),
            device_quota: None,
            command_quota: None,
            telemetry_quota: None,
            telemetry_retention_days: None,
        })
        .then_expect_events(vec![
            AgencyEvent::AgencyRenamed {
                name: "Laval 2".to_owned(),
            },
            AgencyEvent::AgencySuspended,
            AgencyEvent::AgencyMfaRequirementChanged { required: true },
        ]);
}

#[test]
fn amending_to_the_current_state_records_nothing() {
    AgencyTest::with(())
        .given(vec![created("Laval")])
        .when(AgencyCommand::Amend {
            name: Some(name("Laval")),
            status: Some(AgencyStatus::Active),
            mfa_required: Some(false),
            device_quota: None,
            command_quota: None,
            telemetry_quota: None,
            telemetry_retention_days: None,
        })
        .then_expect_events(vec![]);
}

#[test]
fn names_are_parsed_at_the_edge() {
    assert_eq!(AgencyName::parse("").unwrap_err(), AgencyNameError::Empty);
    assert_eq!(
        AgencyName::parse(" \t ").unwrap_err(),
        AgencyNameError::Empty
    );
    assert!(matches!(
        AgencyName::parse(&"x".repeat(201)),
        Err(AgencyNameError::TooLong { max: 200, len: 201 })
    ));
    assert_eq!(
        AgencyName::parse(&"é".repeat(200))
            .unwrap()
            .as_str()
            .chars()
            .count(),
        200
    );
    assert_eq!(
        AgencyName::parse("Laval\u{0}").unwrap_err(),
        AgencyNameError::ControlCharacter
    );
    assert_eq!(AgencyName::parse(" Laval ").unwrap().as_str(), "Laval");
}

#[test]
fn events_are_stored_under_stable_names_and_versions() {
    use cqrs_es::DomainEvent;
    assert_eq!(created("x").event_type(), "AgencyCreated");
    assert_eq!(AgencyEvent::AgencySuspended.event_version(), "1.0");
    let json = serde_json::to_value(created("x")).unwrap();
    assert_eq!(json["AgencyCreated"]["name"], "x");
}

#[test]
fn a_device_quota_is_recorded_once_and_setting_it_again_records_nothing() {
    let quota = |devices| AgencyCommand::Amend {
        name: None,
        status: None,
        mfa_required: None,
        device_quota: Some(devices),
        command_quota: None,
        telemetry_quota: None,
        telemetry_retention_days: None,
    };
    AgencyTest::with(())
        .given(vec![created("City of Laval")])
        .when(quota(500))
        .then_expect_events(vec![AgencyEvent::AgencyDeviceQuotaSet { devices: 500 }]);
    AgencyTest::with(())
        .given(vec![
            created("City of Laval"),
            AgencyEvent::AgencyDeviceQuotaSet { devices: 500 },
        ])
        .when(quota(500))
        .then_expect_events(vec![]);
}

#[test]
fn command_and_telemetry_quotas_are_decided_together_and_only_when_they_change() {
    let quotas = |commands, telemetry| AgencyCommand::Amend {
        name: None,
        status: None,
        mfa_required: None,
        device_quota: None,
        command_quota: commands,
        telemetry_quota: telemetry,
        telemetry_retention_days: None,
    };
    AgencyTest::with(())
        .given(vec![created("City of Laval")])
        .when(quotas(Some(60), Some(200)))
        .then_expect_events(vec![
            AgencyEvent::AgencyCommandQuotaSet { per_minute: 60 },
            AgencyEvent::AgencyTelemetryQuotaSet { per_second: 200 },
        ]);
    AgencyTest::with(())
        .given(vec![
            created("City of Laval"),
            AgencyEvent::AgencyCommandQuotaSet { per_minute: 60 },
        ])
        .when(quotas(Some(60), Some(5)))
        .then_expect_events(vec![AgencyEvent::AgencyTelemetryQuotaSet { per_second: 5 }]);
}

#[test]
fn telemetry_retention_is_recorded_only_when_it_changes() {
    let amend = |days: Option<u32>| AgencyCommand::Amend {
        name: None,
        status: None,
        mfa_required: None,
        device_quota: None,
        command_quota: None,
        telemetry_quota: None,
        telemetry_retention_days: days,
    };
    AgencyTest::with(())
        .given(vec![created("Laval")])
        .when(amend(Some(30)))
        .then_expect_events(vec![AgencyEvent::AgencyTelemetryRetentionSet { days: 30 }]);
    AgencyTest::with(())
        .given(vec![
            created("Laval"),
            AgencyEvent::AgencyTelemetryRetentionSet { days: 30 },
        ])
        .when(amend(Some(30)))
        .then_expect_events(vec![]);
}
