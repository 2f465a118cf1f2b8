//! Every change is attributable (issue 15, item 5): each mutating route of the API, called as
//! a client would, leaves at least one event whose actor is the caller and whose request id
//! is the one the answer carried. The walk must cover every mutating operation the OpenAPI
//! document describes, so a new route that records nothing fails here.

use std::collections::BTreeSet;
use std::time::Duration;

use eriop_tests::totp::oathtool;
use eriop_tests::wait;
use eriop_tests::TestApp;
use reqwest::Method;
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery staple";

struct Walk<'a> {
    app: &'a TestApp,
    covered: BTreeSet<(String, String)>,
}

enum Body {
    None,
    Json(Value),
    Form(Vec<(&'static str, String)>),
}

impl Walk<'_> {
    /// Calls `operation` (`"POST /users/{id}"`, as documented) on `path` as `token`, asserts a
    /// success, and that the trail holds its events, every one by `actor` and with the
    /// answer's request id. Answers the body.
    async fn call(
        &mut self,
        token: Option<&str>,
        actor: &str,
        operation: &str,
        path: &str,
        body: Body,
    ) -> Value {
        let (method, template) = operation.split_once(' ').unwrap();
        let mut request = self.app.http.request(
            Method::from_bytes(method.as_bytes()).unwrap(),
            self.app.api(path),
        );
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request = match body {
            Body::None => request,
            Body::Json(value) => request.json(&value),
            Body::Form(fields) => request.form(&fields),
        };
        let response = request.send().await.unwrap();
        let status = response.status();
        let request_id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "{operation}: {status} {text}");
        self.attributed(operation, &request_id, actor).await;
        self.covered
            .insert((method.to_owned(), format!("/api/v1{template}")));
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// The trail's events of `request_id`: at least one, each by `actor`.
    async fn attributed(&self, operation: &str, request_id: &str, actor: &str) {
        let app = self.app;
        let events: Vec<Value> = wait::until(
            &format!("an event of {operation} (request {request_id})"),
            Duration::from_secs(10),
            || async move {
                let page: Value = app
                    .get_as(
                        &app.token,
                        &format!("/audit/events?request_id={request_id}"),
                    )
                    .await
                    .json()
                    .await
                    .unwrap();
                let items = page["items"].as_array().unwrap().clone();
                (!items.is_empty()).then_some(items)
            },
        )
        .await;
        for event in &events {
            assert_eq!(event["metadata"]["actor"], actor, "{operation}: {event}");
            assert_eq!(event["metadata"]["request_id"], request_id, "{operation}");
        }
    }
}

#[tokio::test]
async fn every_mutating_route_records_the_caller_and_the_request_id() {
    let app = TestApp::spawn().await;
    let admin = app.admin_id.clone();
    let root = Some(app.token.as_str());
    let mut walk = Walk {
        app: &app,
        covered: BTreeSet::new(),
    };

    // The platform's administration.
    let agency = walk
        .call(
            root,
            &admin,
            "POST /agencies",
            "/agencies",
            Body::Json(json!({ "name": "Walk" })),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    walk.call(
        root,
        &admin,
        "PATCH /agencies/{id}",
        &format!("/agencies/{agency}"),
        Body::Json(json!({ "name": "Walk 2" })),
    )
    .await;
    walk.call(
        root,
        &admin,
        "POST /registries",
        "/registries",
        Body::Json(json!({ "registry": "reg-walk", "agency_id": app.admin_agency })),
    )
    .await;

    // Users, roles, memberships.
    let user = walk
        .call(root, &admin, "POST /users", "/users", Body::Json(json!({
            "email": "walker@laval.example", "display_name": "Walker", "password": PASSWORD, "roles": ["viewer"],
        })))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let u = format!("/users/{user}");
    walk.call(
        root,
        &admin,
        "PATCH /users/{id}",
        &u,
        Body::Json(json!({ "display_name": "Walker 2" })),
    )
    .await;
    walk.call(
        root,
        &admin,
        "PUT /users/{id}/roles/{role}",
        &format!("{u}/roles/agency-admin"),
        Body::None,
    )
    .await;
    walk.call(
        root,
        &admin,
        "DELETE /users/{id}/roles/{role}",
        &format!("{u}/roles/agency-admin"),
        Body::None,
    )
    .await;
    walk.call(
        root,
        &admin,
        "PUT /users/{id}/memberships/{agency_id}",
        &format!("{u}/memberships/{agency}"),
        Body::Json(json!({ "roles": ["viewer"] })),
    )
    .await;
    let role = walk
        .call(
            root,
            &admin,
            "POST /roles",
            "/roles",
            Body::Json(json!({ "name": "Walkers", "permissions": ["users:read"] })),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = format!("/roles/{role}");
    walk.call(
        root,
        &admin,
        "PATCH /roles/{id}",
        &r,
        Body::Json(json!({ "name": "Walkers 2" })),
    )
    .await;
    walk.call(
        root,
        &admin,
        "PUT /roles/{id}/permissions/{permission}",
        &format!("{r}/permissions/devices:read"),
        Body::None,
    )
    .await;
    walk.call(
        root,
        &admin,
        "DELETE /roles/{id}/permissions/{permission}",
        &format!("{r}/permissions/devices:read"),
        Body::None,
    )
    .await;
    walk.call(root, &admin, "DELETE /roles/{id}", &r, Body::None)
        .await;
    let account = walk
        .call(
            root,
            &admin,
            "POST /service-accounts",
            "/service-accounts",
            Body::Json(json!({ "name": "SCADA", "roles": ["viewer"] })),
        )
        .await;

    // Devices.
    let class = walk
        .call(
            root,
            &admin,
            "POST /device-classes",
            "/device-classes",
            Body::Json(json!({
                "name": "Light", "functions": [{ "id": "basic", "type": "BasicFunction" }],
            })),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let device = walk
        .call(
            root,
            &admin,
            "POST /devices",
            "/devices",
            Body::Json(json!({
                "class_id": class, "registry": "reg-walk", "serial": "SN-1", "name": "One",
            })),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let bulk = walk
        .call(
            root,
            &admin,
            "POST /devices/bulk",
            "/devices/bulk",
            Body::Json(json!([{
                "class_id": class, "registry": "reg-walk", "serial": "SN-2", "name": "Two",
            }])),
        )
        .await;
    let second = bulk["rows"][0]["id"].as_str().unwrap().to_owned();
    let d = format!("/devices/{device}");
    walk.call(
        root,
        &admin,
        "PATCH /devices/{id}",
        &d,
        Body::Json(json!({ "name": "One bis" })),
    )
    .await;
    walk.call(
        root,
        &admin,
        "POST /devices/{id}/commands",
        &format!("{d}/commands"),
        Body::Json(json!({ "type": "fundamentum", "name": "reboot" })),
    )
    .await;
    walk.call(root, &admin, "DELETE /devices/{id}", &d, Body::None)
        .await;
    walk.call(
        root,
        &admin,
        "DELETE /devices/{id}",
        &format!("/devices/{second}"),
        Body::None,
    )
    .await;
    walk.call(
        root,
        &admin,
        "DELETE /registries/{registry}",
        "/registries/reg-walk",
        Body::None,
    )
    .await;

    // A user's own session: failed logins (attributed to the account tried), a lockout an
    // administrator lifts, a login, the password, MFA, another agency, logout.
    let login = |password: &str| {
        Body::Json(json!({ "email": "walker@laval.example", "password": password }))
    };
    let response = app
        .try_login("walker@laval.example", "not the password")
        .await;
    assert_eq!(response.status(), 401);
    let failed = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    walk.attributed("a failed login", &failed, &user).await;
    walk.call(
        root,
        &admin,
        "POST /users/{id}/unlock",
        &format!("{u}/unlock"),
        Body::None,
    )
    .await;
    let tokens = walk
        .call(
            None,
            &user,
            "POST /auth/login",
            "/auth/login",
            login(PASSWORD),
        )
        .await;
    let token = tokens["access_token"].as_str().unwrap().to_owned();
    let me = Some(token.as_str());
    let new_password = "another horse battery staple";
    let tokens = walk
        .call(
            me,
            &user,
            "POST /auth/password",
            "/auth/password",
            Body::Json(json!({
                "current_password": PASSWORD, "new_password": new_password,
            })),
        )
        .await;
    let token = tokens["access_token"].as_str().unwrap_or(&token).to_owned();
    let me = Some(token.as_str());
    let enrolment = walk
        .call(
            me,
            &user,
            "POST /auth/mfa/totp",
            "/auth/mfa/totp",
            Body::None,
        )
        .await;
    let secret = enrolment["secret"].as_str().unwrap().to_owned();
    walk.call(
        me,
        &user,
        "POST /auth/mfa/totp/confirm",
        "/auth/mfa/totp/confirm",
        Body::Json(json!({
            "code": oathtool(&secret, app.clock_unix()),
        })),
    )
    .await;
    app.clock.advance(Duration::from_secs(30));
    let challenge = app.login("walker@laval.example", new_password).await;
    let tokens = walk
        .call(
            None,
            &user,
            "POST /auth/mfa/verify",
            "/auth/mfa/verify",
            Body::Json(json!({
                "mfa_token": challenge["mfa_token"], "code": oathtool(&secret, app.clock_unix()),
            })),
        )
        .await;
    let token = tokens["access_token"].as_str().unwrap().to_owned();
    let me = Some(token.as_str());
    app.clock.advance(Duration::from_secs(30));
    walk.call(
        me,
        &user,
        "DELETE /auth/mfa/totp",
        "/auth/mfa/totp",
        Body::Json(json!({
            "code": oathtool(&secret, app.clock_unix()),
        })),
    )
    .await;
    walk.call(
        me,
        &user,
        "POST /auth/switch-agency",
        "/auth/switch-agency",
        Body::Json(json!({ "agency_id": agency })),
    )
    .await;
    // A refresh continues a session that a recorded login or agency entry opened; it records
    // nothing (an event per user per token lifetime would bury the trail). The grant's other
    // use, a service account's client credentials, is a login and is walked below.
    let refreshed: Value = app
        .refresh(tokens["refresh_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    let token = refreshed["access_token"].as_str().unwrap().to_owned();
    walk.call(
        Some(&token),
        &user,
        "POST /auth/logout",
        "/auth/logout",
        Body::None,
    )
    .await;
    walk.call(
        None,
        account["client_id"].as_str().unwrap(),
        "POST /auth/token",
        "/auth/token",
        Body::Form(vec![
            ("grant_type", "client_credentials".into()),
            ("client_id", account["client_id"].as_str().unwrap().into()),
            (
                "client_secret",
                account["client_secret"].as_str().unwrap().into(),
            ),
        ]),
    )
    .await;

    // The administrator again: MFA reset, membership revoked, deactivation and back.
    walk.call(
        root,
        &admin,
        "DELETE /users/{id}/memberships/{agency_id}",
        &format!("{u}/memberships/{agency}"),
        Body::None,
    )
    .await;
    let enrolment = app.access_token("walker@laval.example", new_password).await;
    app.enrol_totp(&enrolment).await;
    walk.call(
        root,
        &admin,
        "POST /users/{id}/mfa/reset",
        &format!("{u}/mfa/reset"),
        Body::None,
    )
    .await;
    walk.call(root, &admin, "DELETE /users/{id}", &u, Body::None)
        .await;
    walk.call(
        root,
        &admin,
        "POST /users/{id}/reactivate",
        &format!("{u}/reactivate"),
        Body::None,
    )
    .await;

    let erased = app
        .create_user("erased@laval.example", PASSWORD, &["viewer"])
        .await;
    walk.call(
        root,
        &admin,
        "POST /users/{id}/erase",
        &format!("/users/{erased}/erase"),
        Body::None,
    )
    .await;

    // Every mutating operation of the document was walked.
    let doc: Value = app
        .http
        .get(app.api("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mutating: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|m| matches!(m.as_str(), "post" | "put" | "patch" | "delete"))
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let missed: Vec<_> = mutating.difference(&walk.covered).collect();
    assert!(
        missed.is_empty(),
        "mutating operations not walked: {missed:?}"
    );
}

/// Failed logins are in the trail, and a password-guessing storm cannot flood it: once the
/// account locks, further guesses are refused without a write, and guesses at addresses
/// without an account are counted outside the event store.
#[tokio::test]
async fn a_guessing_storm_leaves_a_bounded_trail() {
    let app = TestApp::spawn().await;
    let user = app
        .create_user("target@laval.example", PASSWORD, &["viewer"])
        .await;
    let of_user = format!(
        "SELECT count(*) FROM events WHERE aggregate_type = 'user' AND aggregate_id = '{user}'"
    );
    let before = app.db.count(&of_user).await;
    let all_before = app.db.count("SELECT count(*) FROM events").await;
    let mut refused = 0;
    for n in 0..40 {
        let response = app
            .try_login("target@laval.example", &format!("guess {n}"))
            .await;
        assert!(
            matches!(response.status().as_u16(), 401 | 429),
            "{}",
            response.status()
        );
        refused += 1;
    }
    assert_eq!(refused, 40);
    let failures = app
        .db
        .count(&format!("{of_user} AND event_type = 'LoginFailed'"))
        .await;
    assert!(failures >= 1, "failed logins are in the trail");
    // Five failures lock the account (LockoutPolicy): five LoginFailed and one UserLocked.
    assert!(
        app.db.count(&of_user).await - before <= 6,
        "the storm grew the trail past the lockout"
    );
    // Locked (or, from this address, rate-limited): the right password does not get in either.
    let locked = app
        .try_login("target@laval.example", PASSWORD)
        .await
        .status();
    assert!(matches!(locked.as_u16(), 401 | 429), "{locked}");
    for n in 0..20 {
        let response = app
            .try_login(&format!("nobody{n}@laval.example"), "guess")
            .await;
        assert!(matches!(response.status().as_u16(), 401 | 429));
    }
    let all_after = app.db.count("SELECT count(*) FROM events").await;
    assert!(
        all_after - all_before <= 6,
        "guesses at unknown addresses wrote events"
    );
}
