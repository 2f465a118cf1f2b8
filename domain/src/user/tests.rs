//! Given / when / then: the user's rules, lockout and MFA with time as an input.

use cqrs_es::test::TestFramework;
use uuid::Uuid;

use super::*;
use crate::{AgencyId, Timestamp, UserId};

type UserTest = TestFramework<User>;

const MINUTE: i64 = 60_000;

fn at(minutes: i64) -> Timestamp {
    Timestamp::from_millis(1_800_000_000_000 + minutes * MINUTE)
}

fn registered() -> UserEvent {
    UserEvent::UserRegistered {
        id: UserId::from_uuid(Uuid::from_u128(1)),
        agency_id: AgencyId::from_uuid(Uuid::from_u128(2)),
        email: Sealed("sealed-email".into()),
        display_name: Sealed("sealed-name".into()),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        must_change_password: false,
        roles: vec!["operator".into()],
        service_account: false,
    }
}

fn attempt(check: LoginCheck, now: Timestamp) -> UserCommand {
    UserCommand::AttemptLogin {
        check,
        now,
        policy: LockoutPolicy::default(),
    }
}

fn failed(minute: i64, n: u32) -> UserEvent {
    UserEvent::LoginFailed {
        at: at(minute),
        consecutive_failures: n,
    }
}

fn four_failures() -> Vec<UserEvent> {
    let mut events = vec![registered()];
    events.extend((1..=4).map(|n| failed(0, n)));
    events
}

#[test]
fn a_right_password_logs_in_and_resets_the_failures() {
    let mut given = four_failures();
    given.truncate(3);
    UserTest::with(())
        .given(given)
        .when(attempt(LoginCheck::PasswordMatched, at(1)))
        .then_expect_events(vec![UserEvent::LoginSucceeded {
            at: at(1),
            totp_step: None,
        }]);
}

#[test]
fn the_fifth_consecutive_failure_locks_for_fifteen_minutes() {
    UserTest::with(())
        .given(four_failures())
        .when(attempt(LoginCheck::PasswordWrong, at(1)))
        .then_expect_events(vec![failed(1, 5), UserEvent::UserLocked { until: at(16) }]);
}

#[test]
fn while_locked_even_the_right_password_is_refused() {
    let mut given = four_failures();
    given.extend([failed(1, 5), UserEvent::UserLocked { until: at(16) }]);
    UserTest::with(())
        .given(given)
        .when(attempt(LoginCheck::PasswordMatched, at(15)))
        .then_expect_error(UserError::Locked { until: at(16) });
}

#[test]
fn the_lock_lifts_by_itself_once_its_time_has_passed() {
    let mut given = four_failures();
    given.extend([failed(1, 5), UserEvent::UserLocked { until: at(16) }]);
    UserTest::with(())
        .given(given.clone())
        .when(attempt(LoginCheck::PasswordMatched, at(16)))
        .then_expect_events(vec![
            UserEvent::UserUnlocked { by_admin: false },
            UserEvent::LoginSucceeded {
                at: at(16),
                totp_step: None,
            },
        ]);
    // ... and the count starts again from zero.
    UserTest::with(())
        .given(given)
        .when(attempt(LoginCheck::PasswordWrong, at(20)))
        .then_expect_events(vec![
            UserEvent::UserUnlocked { by_admin: false },
            failed(20, 1),
        ]);
}

#[test]
fn an_admin_unlocks() {
    let mut given = four_failures();
    given.extend([failed(1, 5), UserEvent::UserLocked { until: at(16) }]);
    UserTest::with(())
        .given(given)
        .when(UserCommand::Unlock)
        .then_expect_events(vec![UserEvent::UserUnlocked { by_admin: true }]);
    UserTest::with(())
        .given(vec![registered()])
        .when(UserCommand::Unlock)
        .then_expect_events(vec![]);
}

#[test]
fn with_mfa_the_password_alone_records_no_success() {
    UserTest::with(())
        .given(mfa_on())
        .when(attempt(LoginCheck::PasswordMatched, at(1)))
        .then_expect_events(vec![]);
}

fn mfa_on() -> Vec<UserEvent> {
    vec![
        registered(),
        UserEvent::MfaEnrolmentStarted {
            secret: Sealed("sealed-secret".into()),
        },
        UserEvent::MfaEnabled { totp_step: 100 },
        UserEvent::RecoveryCodesGenerated {
            hashes: vec!["h0".into(), "h1".into()],
        },
    ]
}

#[test]
fn enrolment_needs_a_started_enrolment_and_a_code() {
    UserTest::with(())
        .given(vec![registered()])
        .when(UserCommand::ConfirmMfa {
            step: 5,
            recovery_code_hashes: vec![],
        })
        .then_expect_error(UserError::MfaNotEnrolling);
    UserTest::with(())
        .given(mfa_on())
        .when(UserCommand::StartMfaEnrolment {
            secret: Sealed("again".into()),
        })
        .then_expect_error(UserError::MfaAlreadyEnabled);
}

#[test]
fn a_totp_code_is_accepted_once() {
    UserTest::with(())
        .given(mfa_on())
        .when(UserCommand::CompleteMfa {
            proof: MfaProof::Totp { step: 101 },
            now: at(1),
        })
        .then_expect_events(vec![UserEvent::LoginSucceeded {
            at: at(1),
            totp_step: Some(101),
        }]);
    let mut given = mfa_on();
    given.push(UserEvent::LoginSucceeded {
        at: at(1),
        totp_step: Some(101),
    });
    for step in [100, 101] {
        UserTest::with(())
            .given(given.clone())
            .when(UserCommand::CompleteMfa {
                proof: MfaProof::Totp { step },
                now: at(1),
            })
            .then_expect_error(UserError::CodeAlreadyUsed);
    }
}

#[test]
fn a_recovery_code_works_once() {
    let mut given = mfa_on();
    UserTest::with(())
        .given(given.clone())
        .when(UserCommand::CompleteMfa {
            proof: MfaProof::RecoveryCode { index: 1 },
            now: at(2),
        })
        .then_expect_events(vec![
            UserEvent::RecoveryCodeUsed { index: 1 },
            UserEvent::LoginSucceeded {
                at: at(2),
                totp_step: None,
            },
        ]);
    given.push(UserEvent::RecoveryCodeUsed { index: 1 });
    UserTest::with(())
        .given(given)
        .when(UserCommand::CompleteMfa {
            proof: MfaProof::RecoveryCode { index: 1 },
            now: at(3),
        })
        .then_expect_error(UserError::CodeAlreadyUsed);
}

#[test]
fn a_deactivated_user_cannot_log_in_and_an_unknown_one_does_not_exist() {
    UserTest::with(())
        .given(vec![registered(), UserEvent::UserDeactivated])
        .when(attempt(LoginCheck::PasswordMatched, at(1)))
        .then_expect_error(UserError::Deactivated);
    UserTest::with(())
        .given_no_previous_events()
        .when(attempt(LoginCheck::PasswordMatched, at(1)))
        .then_expect_error(UserError::NotFound);
}

#[test]
fn emails_are_normalized_and_never_printed() {
    let email = Email::parse("  Jane.Doe@Laval.CA ").unwrap();
    assert_eq!(email.as_str(), "jane.doe@laval.ca");
    assert!(!format!("{email:?}").contains("jane"));
    for bad in [
        "",
        "jane",
        "jane@",
        "@laval.ca",
        "jane@laval",
        "ja ne@laval.ca",
    ] {
        assert!(Email::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn passwords_must_be_long_and_hard_to_guess() {
    let policy = PasswordPolicy::default();
    assert_eq!(policy.check("short", &[]), Err(PasswordError::TooShort(12)));
    assert!(matches!(
        policy.check("password1234", &[]),
        Err(PasswordError::TooWeak(_))
    ));
    assert!(matches!(
        policy.check("jane.doe@laval.ca", &["jane.doe@laval.ca"]),
        Err(PasswordError::TooWeak(_))
    ));
    assert_eq!(policy.check("correct horse battery staple 42", &[]), Ok(()));
}

#[test]
fn roles_are_given_and_taken_once() {
    UserTest::with(())
        .given(vec![registered()])
        .when(UserCommand::AssignRole {
            role: "agency-admin".into(),
        })
        .then_expect_events(vec![UserEvent::RoleAssigned {
            role: "agency-admin".into(),
        }]);
    UserTest::with(())
        .given(vec![registered()])
        .when(UserCommand::AssignRole {
            role: "operator".into(),
        })
        .then_expect_events(vec![]);
    UserTest::with(())
        .given(vec![registered()])
        .when(UserCommand::UnassignRole {
            role: "operator".into(),
        })
        .then_expect_events(vec![UserEvent::RoleUnassigned {
            role: "operator".into(),
        }]);
    UserTest::with(())
        .given(vec![registered()])
        .when(UserCommand::UnassignRole {
            role: "viewer".into(),
        })
        .then_expect_events(vec![]);
}

#[test]
fn entering_an_agency_is_recorded_only_for_a_member() {
    let other = AgencyId::from_uuid(Uuid::from_u128(3));
    let member = vec![
        registered(),
        UserEvent::MembershipGranted {
            agency_id: other,
            roles: vec!["viewer".into()],
        },
    ];
    UserTest::with(())
        .given(member.clone())
        .when(UserCommand::EnterAgency {
            agency_id: other,
            now: at(1),
        })
        .then_expect_events(vec![UserEvent::AgencyEntered {
            agency_id: other,
            at: at(1),
        }]);
    UserTest::with(())
        .given(vec![registered()])
        .when(UserCommand::EnterAgency {
            agency_id: other,
            now: at(1),
        })
        .then_expect_error(UserError::NotFound);
    let mut revoked = member;
    revoked.push(UserEvent::MembershipRevoked { agency_id: other });
    UserTest::with(())
        .given(revoked)
        .when(UserCommand::EnterAgency {
            agency_id: other,
            now: at(1),
        })
        .then_expect_error(UserError::NotFound);
}

#[test]
fn an_erased_person_stays_erased_and_erasing_again_records_nothing() {
    UserTest::with(())
        .given(vec![registered()])
        .when(UserCommand::ErasePersonalData)
        .then_expect_events(vec![UserEvent::PersonalDataErased]);
    let erased = vec![registered(), UserEvent::PersonalDataErased];
    UserTest::with(())
        .given(erased.clone())
        .when(UserCommand::ErasePersonalData)
        .then_expect_events(vec![]);
    UserTest::with(())
        .given(erased.clone())
        .when(UserCommand::Reactivate)
        .then_expect_error(UserError::Erased);
    UserTest::with(())
        .given(erased.clone())
        .when(UserCommand::UpdateProfile {
            display_name: Sealed("sealed-name".into()),
        })
        .then_expect_error(UserError::Erased);
    UserTest::with(())
        .given(erased)
        .when(attempt(LoginCheck::PasswordMatched, at(1)))
        .then_expect_error(UserError::Deactivated);
    UserTest::with(())
        .given(vec![])
        .when(UserCommand::ErasePersonalData)
        .then_expect_error(UserError::NotFound);
}
