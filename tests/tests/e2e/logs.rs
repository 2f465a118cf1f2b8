//! Every request: one JSON access-log line with request id, method, route template, status
//! and latency; no query strings, bodies, emails or tokens anywhere in the logs.

use eriop_tests::capture::Captured;
use eriop_tests::TestApp;
use reqwest::Method;
use serde_json::{json, Value};

// current_thread runtime (the default): the app's tasks run on this thread, so the
// thread's default subscriber sees their logs.
#[tokio::test]
async fn one_json_access_line_per_request_and_no_personal_data() {
    let (captured, _guard) = Captured::start("info");
    let app = TestApp::spawn().await;

    let created = app
        .request(Method::POST, "/agencies")
        .header("x-request-id", "req-log-create")
        .json(&json!({ "name": "Agency of jane.doe@example.org" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let fetched = app
        .request(Method::GET, &format!("/agencies/{id}"))
        .header("x-request-id", "req-log-get")
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.status(), 200);
    let rejected = app
        .request(Method::GET, "/agencies?email=jane.doe@example.org")
        .header("x-request-id", "req-log-query")
        .send()
        .await
        .unwrap();
    assert_eq!(rejected.status(), 400);
    let unauthorized = app
        .http
        .get(app.api("/agencies"))
        .bearer_auth("secret-token-that-must-not-leak")
        .header("x-request-id", "req-log-401")
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);

    let text = captured.text();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let access = |request_id: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| l["target"] == "access" && l["request_id"] == request_id)
            .collect()
    };
    for (request_id, method, route, status) in [
        ("req-log-create", "POST", "/api/v1/agencies", 201),
        ("req-log-get", "GET", "/api/v1/agencies/{id}", 200),
        ("req-log-query", "GET", "/api/v1/agencies", 400),
        ("req-log-401", "GET", "/api/v1/agencies", 401),
    ] {
        let found = access(request_id);
        assert_eq!(found.len(), 1, "one access line for {request_id}: {text}");
        let line = found[0];
        assert_eq!(line["method"], method);
        assert_eq!(line["route"], route);
        assert_eq!(line["status"], status);
        assert!(line["latency_ms"].as_f64().unwrap() >= 0.0);
        assert!(line["timestamp"].is_string());
    }
    for secret in [
        "jane.doe",
        "example.org",
        "secret-token-that-must-not-leak",
        app.token.as_str(),
        id.as_str(),
    ] {
        let leaking: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("\"target\":\"access\"") && l.contains(secret))
            .collect();
        assert!(
            leaking.is_empty(),
            "{secret} in the access log: {leaking:?}"
        );
    }
    for secret in [
        "jane.doe",
        "secret-token-that-must-not-leak",
        app.token.as_str(),
    ] {
        assert!(!text.contains(secret), "{secret} appears in the logs");
    }
}

/// The acceptance of the identity work: through every flow, no log line holds an email, a
/// password, a token, a TOTP secret or code.
#[tokio::test]
async fn identity_flows_log_no_credentials() {
    let (captured, _guard) = Captured::start("debug");
    let app = TestApp::spawn().await;
    let email = "secret.person@laval.example";
    let password = "correct horse battery staple";
    app.create_user(email, password, &["operator"]).await;
    let wrong = app.try_login(email, "a wrong password of mine").await;
    assert_eq!(wrong.status(), 401);
    let login = app.login(email, password).await;
    let access = login["access_token"].as_str().unwrap().to_owned();
    let refresh = login["refresh_token"].as_str().unwrap().to_owned();
    let renewed: Value = app.refresh(&refresh).await.json().await.unwrap();
    let (secret, codes) = app.enrol_totp(&access).await;
    // The code that confirmed the enrolment (the clock has not moved).
    let code = eriop_tests::totp::oathtool(&secret, app.clock_unix());
    let recovery = codes[0].clone();
    let challenge = app.login(email, password).await;
    let mfa_token = challenge["mfa_token"].as_str().unwrap().to_owned();
    let verified = app
        .http
        .post(app.api("/auth/mfa/verify"))
        .json(&json!({ "mfa_token": mfa_token, "code": recovery }))
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), 200);
    let out = app
        .http
        .post(app.api("/auth/logout"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);

    let text = captured.text();
    assert!(text.lines().count() > 20, "the flows were logged");
    for (what, value) in [
        ("email", email.to_owned()),
        ("email (local part)", "secret.person".to_owned()),
        ("password", password.to_owned()),
        ("wrong password", "a wrong password of mine".to_owned()),
        ("access token", access),
        ("refresh token", refresh),
        (
            "renewed refresh token",
            renewed["refresh_token"].as_str().unwrap().to_owned(),
        ),
        ("MFA token", mfa_token),
        ("TOTP secret", secret),
        // Six digits may well occur inside a timestamp: look for the code as a value.
        ("TOTP code", format!("\"{code}\"")),
        ("TOTP code", format!("={code}")),
        ("recovery code", recovery),
        ("admin email", app.admin_email.clone()),
        ("admin password", app.admin_password.clone()),
        ("admin token", app.token.clone()),
    ] {
        assert!(!text.contains(&value), "the {what} appears in the logs");
    }
}

/// Every authorization decision, allowed or denied, is one `authz` line with the request
/// id, user id, agency id, permission, resource id and outcome, and no personal data.
#[tokio::test]
async fn every_authorization_decision_is_logged() {
    let (captured, _guard) = Captured::start("info");
    let app = TestApp::spawn().await;
    let viewer = app
        .create_user(
            "watcher@laval.example",
            "correct horse battery staple",
            &["viewer"],
        )
        .await;
    let token = app
        .login("watcher@laval.example", "correct horse battery staple")
        .await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let denied = app
        .http
        .get(app.api(&format!("/users/{viewer}")))
        .bearer_auth(&token)
        .header("x-request-id", "req-authz-deny")
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let problem: Value = denied.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("users:read"));
    let allowed = app
        .http
        .get(app.api(&format!("/users/{viewer}")))
        .bearer_auth(&app.token)
        .header("x-request-id", "req-authz-allow")
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);

    let text = captured.text();
    let decisions: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["target"] == "authz")
        .collect();
    let find = |request_id: &str| -> Value {
        let found: Vec<&Value> = decisions
            .iter()
            .filter(|d| d["request_id"] == request_id)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one decision for {request_id}: {decisions:?}"
        );
        found[0].clone()
    };
    let deny = find("req-authz-deny");
    assert_eq!(deny["outcome"], "deny");
    assert_eq!(deny["permission"], "users:read");
    assert_eq!(deny["resource_id"], viewer);
    assert!(deny["user_id"]
        .as_str()
        .is_some_and(|u| !u.is_empty() && u != app.admin_id));
    assert!(deny["agency_id"].as_str().is_some_and(|a| !a.is_empty()));
    let allow = find("req-authz-allow");
    assert_eq!(allow["outcome"], "allow");
    assert_eq!(allow["user_id"], app.admin_id);
    for line in text.lines().filter(|l| l.contains("\"target\":\"authz\"")) {
        assert!(
            !line.contains("@laval.example") && !line.contains(&token),
            "{line}"
        );
    }
}

/// The scan `make test` runs over every log line of the run (scripts/scan-logs.py) finds what
/// it looks for: an email, a JWT, a test password, a client address; and passes clean lines.
#[test]
fn the_log_scan_finds_personal_data_and_passes_clean_lines() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/scan-logs.py");
    let scan = |lines: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("1.log"), lines.join("\n") + "\n").unwrap();
        let out = std::process::Command::new("python3")
            .args([script, dir.path().to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let clean = r#"{"level":"INFO","fields":{"message":"access","request_id":"r1","status":200},"target":"access"}"#;
    assert_eq!(scan(&[clean]).0, Some(0));
    for (line, what) in [
        (
            r#"{"fields":{"message":"login jane.doe@example.org"}}"#,
            "email",
        ),
        (
            r#"{"fields":{"token":"eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig"}}"#,
            "jwt",
        ),
        (
            r#"{"fields":{"message":"password correct horse battery staple"}}"#,
            "test password",
        ),
        (
            r#"{"fields":{"client_ip":"127.0.0.1"}}"#,
            "client address field",
        ),
        (
            r#"{"fields":{"message":"nats://bridge:s3cret@nats:4222"}}"#,
            "credentials in a URL",
        ),
    ] {
        let (code, out) = scan(&[clean, line]);
        assert_eq!(code, Some(1), "{what}: {out}");
        assert!(out.contains(what), "{what}: {out}");
        assert!(!out.contains("jane.doe@"), "hits are masked: {out}");
    }
}
