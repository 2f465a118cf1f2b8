//! Identity: login, tokens, refresh rotation with reuse detection, logout, lockout, MFA.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use eriop_tests::totp::oathtool;
use eriop_tests::TestApp;
use reqwest::Method;
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery staple";

async fn tokens(app: &TestApp, email: &str) -> (String, String) {
    let login = app.login(email, PASSWORD).await;
    (
        login["access_token"].as_str().unwrap().to_owned(),
        login["refresh_token"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn login_me_refresh_and_reuse_detection() {
    let app = TestApp::spawn().await;
    let id = app
        .create_user("jane@laval.example", PASSWORD, &["operator"])
        .await;
    let login = app.login("Jane@Laval.example", PASSWORD).await;
    assert_eq!(login["token_type"], "Bearer");
    assert_eq!(login["expires_in"], 15 * 60);
    let access = login["access_token"].as_str().unwrap();
    let refresh = login["refresh_token"].as_str().unwrap();

    let me: Value = app.get_as(access, "/auth/me").await.json().await.unwrap();
    assert_eq!(me["id"], id);
    assert_eq!(me["email"], "jane@laval.example");
    assert_eq!(me["roles"], json!(["operator"]));
    assert_eq!(me["mfa_enabled"], false);

    // Refresh: a new pair, which works.
    let renewed = app.refresh(refresh).await;
    assert_eq!(renewed.status(), 200);
    assert_eq!(renewed.headers()["cache-control"], "no-store");
    let renewed: Value = renewed.json().await.unwrap();
    let new_access = renewed["access_token"].as_str().unwrap();
    let new_refresh = renewed["refresh_token"].as_str().unwrap();
    assert_ne!(new_refresh, refresh);
    assert_eq!(app.get_as(new_access, "/auth/me").await.status(), 200);

    // Within the grace window, the old token answers the same pair (another browser tab).
    let again: Value = app.refresh(refresh).await.json().await.unwrap();
    assert_eq!(again["refresh_token"], renewed["refresh_token"]);
    assert_eq!(again["access_token"], renewed["access_token"]);

    // Past it, the old token is a reuse: refused, and the whole family is revoked.
    app.clock.advance(Duration::from_secs(3));
    let reused = app.refresh(refresh).await;
    assert_eq!(reused.status(), 400);
    let error: Value = reused.json().await.unwrap();
    assert_eq!(error["error"], "invalid_grant");
    let revoked = app.refresh(new_refresh).await;
    assert_eq!(revoked.status(), 400, "the new token went with its family");
}

#[tokio::test]
async fn two_concurrent_refreshes_get_the_same_pair() {
    let app = TestApp::spawn().await;
    app.create_user("tabs@laval.example", PASSWORD, &["viewer"])
        .await;
    let (_, refresh) = tokens(&app, "tabs@laval.example").await;
    let (a, b) = tokio::join!(app.refresh(&refresh), app.refresh(&refresh));
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    let (a, b): (Value, Value) = (a.json().await.unwrap(), b.json().await.unwrap());
    assert_eq!(a["refresh_token"], b["refresh_token"]);
    assert_eq!(a["access_token"], b["access_token"]);
    // And that one pair is the family's current one.
    assert_eq!(
        app.refresh(a["refresh_token"].as_str().unwrap())
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn logout_revokes_the_access_and_refresh_tokens_at_once() {
    let app = TestApp::spawn().await;
    app.create_user("out@laval.example", PASSWORD, &["viewer"])
        .await;
    let (access, refresh) = tokens(&app, "out@laval.example").await;
    let out = app
        .http
        .post(app.api("/auth/logout"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    let me = app.get_as(&access, "/auth/me").await;
    assert_eq!(me.status(), 401);
    assert_eq!(app.refresh(&refresh).await.status(), 400);
}

#[tokio::test]
async fn the_oauth_token_endpoint_speaks_rfc_6749() {
    let app = TestApp::spawn().await;
    let post = |form: Vec<(&'static str, &'static str)>| {
        app.http.post(app.api("/auth/token")).form(&form).send()
    };
    for (form, error) in [
        (
            vec![
                ("grant_type", "password"),
                ("username", "a"),
                ("password", "b"),
            ],
            "unsupported_grant_type",
        ),
        (
            vec![("grant_type", "authorization_code")],
            "unsupported_grant_type",
        ),
        (vec![("refresh_token", "x")], "invalid_request"),
        (vec![("grant_type", "refresh_token")], "invalid_request"),
        (
            vec![("grant_type", "refresh_token"), ("refresh_token", "forged")],
            "invalid_grant",
        ),
    ] {
        let response = post(form).await.unwrap();
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], error);
    }
}

#[tokio::test]
async fn five_wrong_passwords_lock_until_the_time_passes_or_an_admin_unlocks() {
    let app = TestApp::spawn().await;
    let id = app
        .create_user("lock@laval.example", PASSWORD, &["viewer"])
        .await;
    for n in 1..=5 {
        let response = app
            .http
            .post(app.api("/auth/login"))
            .header("x-request-id", format!("req-wrong-{n}"))
            .json(&json!({ "email": "lock@laval.example", "password": "not the password" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }
    // Locked: the right password is refused, with the same answer as a wrong one or an
    // unknown account.
    let locked = app.try_login("lock@laval.example", PASSWORD).await;
    assert_eq!(locked.status(), 401);
    let locked: Value = locked.json().await.unwrap();
    let unknown: Value = app
        .try_login("nobody@laval.example", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(locked["detail"], unknown["detail"]);

    // The lock lifts by itself after 15 minutes (the clock is an input).
    app.clock.advance(Duration::from_secs(15 * 60));
    app.login("lock@laval.example", PASSWORD).await;

    // Locked again, then unlocked by an admin.
    for _ in 0..5 {
        app.try_login("lock@laval.example", "still not it").await;
    }
    assert_eq!(
        app.try_login("lock@laval.example", PASSWORD).await.status(),
        401
    );
    // (The admin's own access token expired with the clock's 15 minutes: log in again.)
    let admin = app.login(&app.admin_email, &app.admin_password).await;
    let unlock = app
        .http
        .post(app.api(&format!("/users/{id}/unlock")))
        .bearer_auth(admin["access_token"].as_str().unwrap())
        .header("x-request-id", "req-admin-unlock")
        .send()
        .await
        .unwrap();
    assert_eq!(unlock.status(), 204);
    app.login("lock@laval.example", PASSWORD).await;

    // Every step is an event, with its actor and request id.
    let events: Vec<(String, Value)> = sqlx::query_as(
        "SELECT event_type, metadata FROM events WHERE aggregate_type = 'user' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(&id)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "UserRegistered",
            "LoginFailed",
            "LoginFailed",
            "LoginFailed",
            "LoginFailed",
            "LoginFailed",
            "UserLocked",
            "UserUnlocked",
            "LoginSucceeded",
            "LoginFailed",
            "LoginFailed",
            "LoginFailed",
            "LoginFailed",
            "LoginFailed",
            "UserLocked",
            "UserUnlocked",
            "LoginSucceeded",
        ]
    );
    assert_eq!(events[1].1["request_id"], "req-wrong-1");
    assert_eq!(events[1].1["actor"], id);
    assert_eq!(events[6].1["request_id"], "req-wrong-5");
    assert_eq!(events[15].1["actor"], app.admin_id, "the admin unlocked");
    assert_eq!(events[15].1["request_id"], "req-admin-unlock");
    assert_eq!(
        events[0].1["actor"], app.admin_id,
        "the admin registered the user"
    );
}

#[tokio::test]
async fn passwords_are_stored_as_argon2id_phc_strings() {
    let app = TestApp::spawn().await;
    let id = app
        .create_user("hash@laval.example", PASSWORD, &["viewer"])
        .await;
    let payload: Value = sqlx::query_scalar(
        "SELECT payload FROM events WHERE aggregate_id = $1 AND event_type = 'UserRegistered'",
    )
    .bind(&id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    let hash = payload["UserRegistered"]["password_hash"].as_str().unwrap();
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    let text = payload.to_string();
    for secret in [PASSWORD, "hash@laval.example", "Test User"] {
        assert!(!text.contains(secret), "{secret} in the event payload");
    }
}

#[tokio::test]
async fn weak_passwords_and_duplicate_emails_are_refused() {
    let app = TestApp::spawn().await;
    let create = |email: &'static str, password: &'static str| {
        app.request(Method::POST, "/users")
            .json(&json!({ "email": email, "display_name": "X", "password": password }))
            .send()
    };
    let weak = create("weak@laval.example", "password1234").await.unwrap();
    assert_eq!(weak.status(), 422);
    let short = create("short@laval.example", "short").await.unwrap();
    assert_eq!(short.status(), 422);
    assert_eq!(
        create("dup@laval.example", PASSWORD)
            .await
            .unwrap()
            .status(),
        201
    );
    let dup = create("DUP@laval.example", PASSWORD).await.unwrap();
    assert_eq!(dup.status(), 409, "unique case-insensitively");
}

/// Tokens that a careless verifier would accept.
#[tokio::test]
async fn forged_and_stale_tokens_are_refused() {
    let app = TestApp::spawn().await;
    let genuine = app.token.clone();
    let parts: Vec<&str> = genuine.split('.').collect();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(header["alg"], "EdDSA");
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    let with_claims = |change: &dyn Fn(&mut Value)| {
        let mut c = claims.clone();
        change(&mut c);
        format!("{}.{}.{}", parts[0], b64(&c), parts[2])
    };
    let with_header = |change: &dyn Fn(&mut Value), signature: &str| {
        let mut h = header.clone();
        change(&mut h);
        format!("{}.{}.{signature}", b64(&h), parts[1])
    };
    // HS256 "signed" with the public key, as a confused verifier would check it.
    let jwks: Value = app
        .http
        .get(format!("{}/.well-known/jwks.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["kid"], header["kid"]);
    let public_key = jwks["keys"][0]["x"].as_str().unwrap().to_owned();
    let hs256 = {
        use hmac::{Hmac, Mac};
        let mut h = header.clone();
        h["alg"] = "HS256".into();
        let signing_input = format!("{}.{}", b64(&h), parts[1]);
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(public_key.as_bytes()).unwrap();
        mac.update(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    };
    let cases = [
        ("alg none", with_header(&|h| h["alg"] = "none".into(), "")),
        (
            "wrong signature",
            format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                URL_SAFE_NO_PAD.encode([7u8; 64])
            ),
        ),
        (
            "altered claims",
            with_claims(&|c| c["roles"] = json!(["platform-admin", "x"])),
        ),
        ("HS256 with the public key", hs256),
        (
            "unknown kid",
            with_header(&|h| h["kid"] = "0000000000000000".into(), parts[2]),
        ),
        (
            "wrong aud",
            with_claims(&|c| c["aud"] = "someone-else".into()),
        ),
        ("wrong iss", with_claims(&|c| c["iss"] = "evil".into())),
        ("garbage", "not.a.token".to_owned()),
    ];
    for (what, token) in cases {
        let response = app.get_as(&token, "/auth/me").await;
        assert_eq!(response.status(), 401, "{what}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{what}"
        );
    }
    assert_eq!(app.get_as(&genuine, "/auth/me").await.status(), 200);
    // Expired: the clock passes the 15 minutes.
    app.clock.advance(Duration::from_secs(15 * 60 + 1));
    assert_eq!(
        app.get_as(&genuine, "/auth/me").await.status(),
        401,
        "expired"
    );
}

#[tokio::test]
async fn mfa_enrol_confirm_challenge_single_use_and_recovery_codes() {
    let app = TestApp::spawn().await;
    app.create_user("mfa@laval.example", PASSWORD, &["operator"])
        .await;
    let (access, _) = tokens(&app, "mfa@laval.example").await;
    let post = |path: &str, token: &str, body: Value| {
        app.http
            .post(app.api(path))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let enrolment: Value = post("/auth/mfa/totp", &access, json!({}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = enrolment["secret"].as_str().unwrap().to_owned();
    assert!(enrolment["otpauth_uri"]
        .as_str()
        .unwrap()
        .starts_with("otpauth://totp/ERIOP:"));
    assert!(enrolment["qr_code"]
        .as_str()
        .unwrap()
        .starts_with("data:image/png;base64,"));

    let now = || app.clock_unix();
    let wrong = post(
        "/auth/mfa/totp/confirm",
        &access,
        json!({ "code": "000000" }),
    )
    .await
    .unwrap();
    assert_eq!(wrong.status(), 422);
    let confirmed = post(
        "/auth/mfa/totp/confirm",
        &access,
        json!({ "code": oathtool(&secret, now()) }),
    )
    .await
    .unwrap();
    assert_eq!(confirmed.status(), 200);
    let recovery: Vec<String> = confirmed.json::<Value>().await.unwrap()["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(recovery.len(), 10);

    // Log in: a challenge, answered with the next code.
    app.clock.advance(Duration::from_secs(30));
    let challenge = app.login("mfa@laval.example", PASSWORD).await;
    assert_eq!(challenge["mfa_required"], true);
    assert!(challenge.get("access_token").is_none());
    let mfa_token = challenge["mfa_token"].as_str().unwrap().to_owned();
    // The MFA token is no access token.
    assert_eq!(app.get_as(&mfa_token, "/auth/me").await.status(), 401);
    let code = oathtool(&secret, now());
    let ok = app.mfa_verify(&mfa_token, &code).await;
    assert_eq!(ok.status(), 200);
    let pair: Value = ok.json().await.unwrap();
    let me: Value = app
        .get_as(pair["access_token"].as_str().unwrap(), "/auth/me")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["mfa_enabled"], true);

    // The MFA token served once.
    assert_eq!(app.mfa_verify(&mfa_token, &recovery[0]).await.status(), 401);
    // The same code a second time is refused, even with a new challenge.
    let challenge = || async {
        app.login("mfa@laval.example", PASSWORD).await["mfa_token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        app.mfa_verify(&challenge().await, &code).await.status(),
        401
    );
    // A recovery code works once.
    let fresh = challenge().await;
    assert_eq!(app.mfa_verify(&fresh, &recovery[3]).await.status(), 200);
    assert_eq!(
        app.mfa_verify(&challenge().await, &recovery[3])
            .await
            .status(),
        401
    );
}

#[tokio::test]
async fn a_one_time_password_must_be_changed_first_and_a_change_ends_other_sessions() {
    let app = TestApp::spawn().await;
    let created: Value = app
        .request(Method::POST, "/users")
        .json(&json!({ "email": "new@laval.example", "display_name": "New Hire" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let one_time = created["one_time_password"].as_str().unwrap().to_owned();
    assert_eq!(created["password_change_required"], true);
    let first = app.login("new@laval.example", &one_time).await;
    let restricted = first["access_token"].as_str().unwrap().to_owned();
    let refused = app.get_as(&restricted, "/agencies").await;
    assert_eq!(refused.status(), 403);
    let problem: Value = refused.json().await.unwrap();
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .contains("/auth/password"));
    assert_eq!(app.get_as(&restricted, "/auth/me").await.status(), 200);
    // A refresh does not lift the restriction.
    let refreshed: Value = app
        .refresh(first["refresh_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    let still = refreshed["access_token"].as_str().unwrap();
    assert_eq!(
        app.get_as(still, "/users/00000000-0000-0000-0000-000000000000")
            .await
            .status(),
        403
    );

    // A second session, open before the change.
    let other = app.login("new@laval.example", &one_time).await;
    let change = |token: &str, current: &str| {
        app.http
            .post(app.api("/auth/password"))
            .bearer_auth(token)
            .json(&json!({ "current_password": current, "new_password": PASSWORD }))
            .send()
    };
    assert_eq!(
        change(still, "not the current one").await.unwrap().status(),
        422
    );
    let changed = change(still, &one_time).await.unwrap();
    assert_eq!(changed.status(), 200);
    let fresh: Value = changed.json().await.unwrap();
    let me: Value = app
        .get_as(fresh["access_token"].as_str().unwrap(), "/auth/me")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["password_change_required"], false);
    // Older access tokens stop at once, the other session's refresh token too.
    assert_eq!(app.get_as(&restricted, "/auth/me").await.status(), 401);
    assert_eq!(
        app.get_as(other["access_token"].as_str().unwrap(), "/auth/me")
            .await
            .status(),
        401
    );
    assert_eq!(
        app.refresh(other["refresh_token"].as_str().unwrap())
            .await
            .status(),
        400
    );
    // The old password no longer works, the new one does.
    assert_eq!(
        app.try_login("new@laval.example", &one_time).await.status(),
        401
    );
    app.login("new@laval.example", PASSWORD).await;
}

#[tokio::test]
async fn an_agency_that_requires_mfa_sends_its_users_to_enrolment() {
    let app = TestApp::spawn().await;
    let me: Value = app
        .get_as(&app.token, "/auth/me")
        .await
        .json()
        .await
        .unwrap();
    let agency = me["agency_id"].as_str().unwrap().to_owned();
    let patched: Value = app
        .patch_agency(&agency, json!({ "mfa_required": true }))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(patched["mfa_required"], true);
    app.create_user("must.enrol@laval.example", PASSWORD, &["viewer"])
        .await;
    let login = app.login("must.enrol@laval.example", PASSWORD).await;
    let token = login["access_token"].as_str().unwrap();
    let refused = app
        .get_as(token, "/users/00000000-0000-0000-0000-000000000000")
        .await;
    assert_eq!(refused.status(), 403);
    let problem: Value = refused.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("MFA"));
    let enrol = app
        .http
        .post(app.api("/auth/mfa/totp"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(enrol.status(), 200, "enrolment stays open");
}

#[tokio::test]
async fn mfa_off_by_the_user_with_a_code_or_by_an_admin_reset() {
    let app = TestApp::spawn().await;
    let id = app
        .create_user("reset@laval.example", PASSWORD, &["viewer"])
        .await;
    let (access, _) = tokens(&app, "reset@laval.example").await;
    let (secret, _) = app.enrol_totp(&access).await;
    let disable = |body: Value| {
        app.http
            .delete(app.api("/auth/mfa/totp"))
            .bearer_auth(&access)
            .json(&body)
            .send()
    };
    assert_eq!(
        disable(json!({ "code": "000000" })).await.unwrap().status(),
        401
    );
    app.clock.advance(Duration::from_secs(30));
    let code = oathtool(&secret, app.clock_unix());
    assert_eq!(
        disable(json!({ "code": code })).await.unwrap().status(),
        204
    );
    assert_eq!(
        app.login("reset@laval.example", PASSWORD).await["mfa_required"],
        Value::Null
    );

    // Enrolled again, then reset by an admin (a lost phone): its own event.
    app.enrol_totp(&access).await;
    assert_eq!(
        app.login("reset@laval.example", PASSWORD).await["mfa_required"],
        true
    );
    let reset = app
        .request(Method::POST, &format!("/users/{id}/mfa/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 204);
    assert!(app.login("reset@laval.example", PASSWORD).await["access_token"].is_string());
    let resets: Vec<(Value, Value)> = sqlx::query_as(
        "SELECT payload, metadata FROM events WHERE aggregate_id = $1 AND event_type = 'MfaDisabled' ORDER BY sequence",
    )
    .bind(&id)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(resets.len(), 2);
    assert_eq!(resets[0].0["MfaDisabled"]["by_admin"], false);
    assert_eq!(resets[1].0["MfaDisabled"]["by_admin"], true);
    assert_eq!(resets[1].1["actor"], app.admin_id);
}

#[tokio::test]
async fn a_deactivated_user_is_out_at_once_and_can_come_back() {
    let app = TestApp::spawn().await;
    let id = app
        .create_user("leaving@laval.example", PASSWORD, &["viewer"])
        .await;
    let (access, refresh) = tokens(&app, "leaving@laval.example").await;
    let gone = app
        .request(Method::DELETE, &format!("/users/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 204);
    assert_eq!(app.get_as(&access, "/auth/me").await.status(), 401);
    assert_eq!(app.refresh(&refresh).await.status(), 400);
    assert_eq!(
        app.try_login("leaving@laval.example", PASSWORD)
            .await
            .status(),
        401
    );
    let user: Value = app
        .request(Method::GET, &format!("/users/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(user["status"], "deactivated");
    let back = app
        .request(Method::POST, &format!("/users/{id}/reactivate"))
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), 204);
    app.login("leaving@laval.example", PASSWORD).await;
}

#[tokio::test]
async fn service_accounts_use_the_client_credentials_grant_only() {
    let app = TestApp::spawn().await;
    let created: Value = app
        .request(Method::POST, "/service-accounts")
        .json(&json!({ "name": "SCADA integration", "roles": ["viewer"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let client_id = created["client_id"].as_str().unwrap().to_owned();
    let secret = created["client_secret"].as_str().unwrap().to_owned();
    let grant = |id: String, secret: String| {
        app.http
            .post(app.api("/auth/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &id),
                ("client_secret", &secret),
            ])
            .send()
    };
    let granted = grant(client_id.clone(), secret.clone()).await.unwrap();
    assert_eq!(granted.status(), 200);
    let body: Value = granted.json().await.unwrap();
    assert!(
        body.get("refresh_token").is_none(),
        "no refresh token (RFC 6749 4.4.3)"
    );
    let me: Value = app
        .get_as(body["access_token"].as_str().unwrap(), "/auth/me")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["id"], client_id);
    assert_eq!(me["roles"], json!(["viewer"]));
    let wrong = grant(client_id, "wrong".into()).await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        wrong.json::<Value>().await.unwrap()["error"],
        "invalid_client"
    );
    // A person's id and password are no client credentials (that would skip MFA).
    let person = app.admin_id.clone();
    let refused = grant(person, app.admin_password.clone()).await.unwrap();
    assert_eq!(refused.status(), 401);
}

#[tokio::test]
async fn one_address_cannot_hammer_the_login() {
    let app = TestApp::spawn().await;
    let mut last = None;
    // The admin's own login counted once already (spawn); the limit is 30 a minute.
    for _ in 0..30 {
        last = Some(
            app.try_login("nobody@laval.example", "whatever it is")
                .await,
        );
    }
    let last = last.unwrap();
    assert_eq!(last.status(), 429);
    assert_eq!(last.headers()["retry-after"], "60");
    assert_eq!(last.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn users_are_listed_with_their_personal_data_until_it_is_erased() {
    let app = TestApp::spawn().await;
    let ana = app
        .create_user("ana@laval.example", PASSWORD, &["operator"])
        .await;
    app.create_user("bo@laval.example", PASSWORD, &["viewer"])
        .await;
    let list = |app: &TestApp| {
        let request = app.request(Method::GET, "/users?limit=10");
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let page = list(&app).await;
    let emails: Vec<Value> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].clone())
        .collect();
    assert_eq!(
        emails,
        [
            json!(app.admin_email),
            json!("ana@laval.example"),
            json!("bo@laval.example")
        ]
    );
    // Nothing personal in clear in the read model.
    let stored: String =
        sqlx::query_scalar("SELECT string_agg(row_to_json(u)::text, ' ') FROM users u")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert!(!stored.contains("ana@laval.example") && !stored.contains("Test User"));

    // Erasing a person is deleting the key: the data is gone, the history stays whole.
    let events_before = app.db.count("SELECT count(*) FROM events").await;
    sqlx::query("DELETE FROM user_data_keys WHERE user_id = $1::uuid")
        .bind(&ana)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let page = list(&app).await;
    let erased = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == ana.as_str())
        .unwrap();
    assert_eq!(erased["email"], "[erased]");
    assert_eq!(erased["display_name"], "[erased]");
    assert_eq!(erased["roles"], json!(["operator"]));
    assert_eq!(
        app.db.count("SELECT count(*) FROM events").await,
        events_before
    );
}

#[tokio::test]
async fn after_three_wrong_codes_the_step_is_closed() {
    let app = TestApp::spawn().await;
    app.create_user("guess@laval.example", PASSWORD, &["viewer"])
        .await;
    let (access, _) = tokens(&app, "guess@laval.example").await;
    let enrolment: Value = app
        .http
        .post(app.api("/auth/mfa/totp"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = enrolment["secret"].as_str().unwrap().to_owned();
    let confirm = app
        .http
        .post(app.api("/auth/mfa/totp/confirm"))
        .bearer_auth(&access)
        .json(&json!({ "code": oathtool(&secret, app.clock_unix()) }))
        .send()
        .await
        .unwrap();
    assert_eq!(confirm.status(), 200);
    // Start at the beginning of a fresh 30-second step.
    let into_step = app.clock_unix() % 30;
    app.clock
        .advance(Duration::from_secs(60 - into_step as u64));
    let mfa_token = app.login("guess@laval.example", PASSWORD).await["mfa_token"]
        .as_str()
        .unwrap()
        .to_owned();
    for wrong in ["000000", "111111", "222222"] {
        assert_eq!(app.mfa_verify(&mfa_token, wrong).await.status(), 401);
    }
    let right = oathtool(&secret, app.clock_unix());
    let closed = app.mfa_verify(&mfa_token, &right).await;
    assert_eq!(closed.status(), 401);
    let problem: Value = closed.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("next code"));
    // The next step opens again.
    app.clock.advance(Duration::from_secs(30));
    let right = oathtool(&secret, app.clock_unix());
    assert_eq!(app.mfa_verify(&mfa_token, &right).await.status(), 200);
}

#[tokio::test]
async fn the_first_administrator_is_made_once_with_a_password_to_change() {
    let app = TestApp::spawn().await;
    let again =
        eriop_gateway::bootstrap::bootstrap_admin(&app.settings, "second@eriop.test", None).await;
    assert!(again.err().unwrap().contains("already exists"));

    // On an empty platform: a generated one-time password that must be changed first.
    let db = eriop_tests::TestDb::migrated().await;
    let mut settings = app.settings.clone();
    settings.database_url = db.url.clone().into();
    let made = eriop_gateway::bootstrap::bootstrap_admin(&settings, "first@eriop.test", None)
        .await
        .unwrap();
    let password = made.one_time_password.expect("a generated password");
    assert!(secrecy::ExposeSecret::expose_secret(&password).len() >= 20);
    let registered: Value =
        sqlx::query_scalar("SELECT payload FROM events WHERE event_type = 'UserRegistered'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(registered["UserRegistered"]["must_change_password"], true);
    assert_eq!(
        registered["UserRegistered"]["roles"],
        json!(["platform-admin"])
    );
}

#[tokio::test]
async fn the_permission_catalogue_is_listed() {
    let app = TestApp::spawn().await;
    let catalogue: Value = app
        .http
        .get(app.api("/permissions"))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = catalogue["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "agencies:manage",
            "users:read",
            "users:write",
            "roles:manage",
            "devices:read",
            "devices:write",
            "devices:command",
            "telemetry:read",
            "audit:read",
        ]
    );
}

#[tokio::test]
async fn concurrent_logins_of_one_user_all_succeed() {
    let app = TestApp::spawn().await;
    app.create_user("busy@laval.example", PASSWORD, &["viewer"])
        .await;
    let logins =
        futures::future::join_all((0..8).map(|_| app.try_login("busy@laval.example", PASSWORD)))
            .await;
    for login in logins {
        assert_eq!(login.status(), 200);
    }
    let succeeded = app
        .db
        .count("SELECT count(*) FROM events WHERE event_type = 'LoginSucceeded' AND aggregate_id IN (SELECT id::text FROM users WHERE roles = '{viewer}')")
        .await;
    assert_eq!(succeeded, 8, "each login is in the audit trail");
}

#[tokio::test]
async fn a_role_given_or_taken_applies_to_tokens_already_issued() {
    let app = TestApp::spawn().await;
    let id = app
        .create_user("rising@laval.example", PASSWORD, &["operator"])
        .await;
    let (token, _) = tokens(&app, "rising@laval.example").await;
    let probe = format!("/users/{id}");
    assert_eq!(
        app.get_as(&token, &probe).await.status(),
        403,
        "operators cannot read users"
    );

    let role = |method: Method| {
        app.request(method, &format!("/users/{id}/roles/agency-admin"))
            .header("x-request-id", "req-give-role")
            .send()
    };
    assert_eq!(role(Method::PUT).await.unwrap().status(), 204);
    // The same token, at once.
    assert_eq!(app.get_as(&token, &probe).await.status(), 200);
    let me: Value = app.get_as(&token, "/auth/me").await.json().await.unwrap();
    assert_eq!(me["roles"], json!(["operator", "agency-admin"]));

    assert_eq!(role(Method::DELETE).await.unwrap().status(), 204);
    // The very next request is refused: no wait, no retry.
    assert_eq!(app.get_as(&token, &probe).await.status(), 403);

    let unknown = app
        .request(Method::PUT, &format!("/users/{id}/roles/emperor"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let given: Value = sqlx::query_scalar(
        "SELECT metadata FROM events WHERE aggregate_id = $1 AND event_type = 'RoleAssigned'",
    )
    .bind(&id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(given["actor"], app.admin_id);
    assert_eq!(given["request_id"], "req-give-role");
}

#[tokio::test]
async fn a_member_of_two_agencies_sees_one_at_a_time_and_only_its_own() {
    let app = TestApp::spawn().await;
    let me: Value = app
        .get_as(&app.token, "/auth/me")
        .await
        .json()
        .await
        .unwrap();
    let home = me["agency_id"].as_str().unwrap().to_owned();
    let second = app.created_agency("Longueuil").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let stranger = app.created_agency("Brossard").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let id = app
        .create_user("coordinator@laval.example", PASSWORD, &["agency-admin"])
        .await;
    let grant = app
        .request(Method::PUT, &format!("/users/{id}/memberships/{second}"))
        .json(&json!({ "roles": ["agency-admin"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(grant.status(), 204);

    let agencies_seen = |token: String| {
        let app = &app;
        async move {
            let page: Value = app
                .get_as(&token, "/audit/events?limit=1000")
                .await
                .json()
                .await
                .unwrap();
            let mut seen: Vec<String> = page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["metadata"]["agency_id"].as_str().unwrap().to_owned())
                .collect();
            seen.dedup();
            seen
        }
    };
    let (home_token, _) = tokens(&app, "coordinator@laval.example").await;
    assert_eq!(agencies_seen(home_token.clone()).await, vec![home.clone()]);

    let switch = |token: String, agency: String| {
        let app = &app;
        async move {
            app.http
                .post(app.api("/auth/switch-agency"))
                .bearer_auth(token)
                .json(&json!({ "agency_id": agency }))
                .send()
                .await
                .unwrap()
        }
    };
    let switched = switch(home_token.clone(), second.clone()).await;
    assert_eq!(switched.status(), 200);
    let second_token = switched.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let me: Value = app
        .get_as(&second_token, "/auth/me")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["agency_id"], second);
    assert_eq!(
        agencies_seen(second_token.clone()).await,
        vec![second.clone()]
    );

    // Not a member: 404, as for anything of another agency.
    assert_eq!(switch(home_token.clone(), stranger).await.status(), 404);

    // Membership revoked: the token of that agency loses its rights at the next request.
    let revoke = app
        .request(Method::DELETE, &format!("/users/{id}/memberships/{second}"))
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 204);
    assert_eq!(
        app.get_as(&second_token, "/audit/events").await.status(),
        403
    );
    assert_eq!(switch(home_token, second).await.status(), 404);
}

/// A session's access tokens die with it: after a logout, and after a refresh token is
/// reused past the grace window, every access token of that session is refused at the next
/// request, not only the one presented; another session of the same user goes on.
#[tokio::test]
async fn a_sessions_access_tokens_die_with_it() {
    let app = TestApp::spawn().await;
    app.create_user("tabs@laval.example", PASSWORD, &["viewer"])
        .await;
    let access_of = |v: &Value| v["access_token"].as_str().unwrap().to_owned();
    let refresh_of = |v: &Value| v["refresh_token"].as_str().unwrap().to_owned();

    // Logout with the newest access token of a session.
    let first = app.login("tabs@laval.example", PASSWORD).await;
    let other_session = app.login("tabs@laval.example", PASSWORD).await;
    let renewed: Value = app.refresh(&refresh_of(&first)).await.json().await.unwrap();
    assert_eq!(
        app.get_as(&access_of(&first), "/auth/me").await.status(),
        200
    );
    let logout = app
        .http
        .post(app.api("/auth/logout"))
        .bearer_auth(access_of(&renewed))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    assert_eq!(
        app.get_as(&access_of(&renewed), "/auth/me").await.status(),
        401
    );
    assert_eq!(
        app.get_as(&access_of(&first), "/auth/me").await.status(),
        401,
        "the session's older access token"
    );
    assert_eq!(
        app.get_as(&access_of(&other_session), "/auth/me")
            .await
            .status(),
        200
    );

    // A refresh token reused past the grace window revokes its session's access tokens.
    let stolen = refresh_of(&other_session);
    let rotated: Value = app.refresh(&stolen).await.json().await.unwrap();
    assert_eq!(
        app.get_as(&access_of(&rotated), "/auth/me").await.status(),
        200
    );
    app.clock.advance(Duration::from_secs(3));
    assert_eq!(app.refresh(&stolen).await.status(), 400);
    assert_eq!(
        app.get_as(&access_of(&rotated), "/auth/me").await.status(),
        401
    );
    assert_eq!(
        app.get_as(&access_of(&other_session), "/auth/me")
            .await
            .status(),
        401
    );
}

/// Answers that carry a token or a secret are never cached (`Cache-Control: no-store`), and
/// recovery codes carry at least 80 random bits.
#[tokio::test]
async fn secrets_are_answered_uncacheable_and_recovery_codes_are_long() {
    let app = TestApp::spawn().await;
    let no_store = |r: &reqwest::Response, what: &str| {
        assert_eq!(
            r.headers()
                .get("cache-control")
                .map(|v| v.to_str().unwrap()),
            Some("no-store"),
            "{what}"
        );
    };
    let created = app
        .request(Method::POST, "/users")
        .json(&json!({ "email": "otp@laval.example", "display_name": "One Time", "roles": ["viewer"] }))
        .send()
        .await
        .unwrap();
    no_store(&created, "a one-time password");
    let account = app
        .request(Method::POST, "/service-accounts")
        .json(&json!({ "name": "SCADA", "roles": ["viewer"] }))
        .send()
        .await
        .unwrap();
    no_store(&account, "a client secret");
    let login = app.try_login(&app.admin_email, &app.admin_password).await;
    no_store(&login, "tokens");
    let enrolment = app
        .http
        .post(app.api("/auth/mfa/totp"))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    no_store(&enrolment, "a TOTP secret");
    let secret = enrolment.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let confirmed = app
        .http
        .post(app.api("/auth/mfa/totp/confirm"))
        .bearer_auth(&app.token)
        .json(&json!({ "code": eriop_tests::totp::oathtool(&secret, app.clock_unix()) }))
        .send()
        .await
        .unwrap();
    no_store(&confirmed, "recovery codes");
    let codes: Vec<String> = confirmed.json::<Value>().await.unwrap()["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    for code in &codes {
        let hex: String = code.chars().filter(char::is_ascii_hexdigit).collect();
        assert!(hex.len() * 4 >= 80, "{code}: {} bits", hex.len() * 4);
    }
}

/// The second factor cannot be guessed: concurrent wrong codes are counted atomically (three
/// per step are even looked at), wrong codes count toward the account lockout, a per-address
/// throttle guards the endpoint, and an MFA token dies with a password change.
#[tokio::test]
async fn the_second_factor_cannot_be_guessed() {
    let app = TestApp::spawn_with(eriop_tests::TestDb::migrated().await, |s| {
        s.login_attempts_per_ip_per_minute = 40;
    })
    .await;
    app.create_user("guarded@laval.example", PASSWORD, &["viewer"])
        .await;
    let first = app.access_token("guarded@laval.example", PASSWORD).await;
    let (secret, _) = app.enrol_totp(&first).await;
    let challenge = || async {
        app.login("guarded@laval.example", PASSWORD).await["mfa_token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let token = challenge().await;
    let answers = futures::future::join_all((0..10).map(|n| {
        let token = token.clone();
        let app = &app;
        async move {
            let r = app.mfa_verify(&token, &format!("{:06}", 100_000 + n)).await;
            let problem: Value = r.json().await.unwrap();
            problem["detail"].as_str().unwrap().to_owned()
        }
    }))
    .await;
    let checked = answers.iter().filter(|d| d.contains("not valid")).count();
    assert!(
        checked <= 3,
        "{checked} wrong codes were tried in one step: {answers:?}"
    );
    // Not even the right code passes in this step any more.
    let right = app
        .mfa_verify(
            &token,
            &eriop_tests::totp::oathtool(&secret, app.clock_unix()),
        )
        .await;
    assert_eq!(right.status(), 401);

    // Wrong codes lock the account like wrong passwords (five in a row by default).
    app.clock.advance(Duration::from_secs(30));
    for n in 0..2 {
        let r = app
            .mfa_verify(&challenge().await, &format!("{:06}", 200_000 + n))
            .await;
        assert_eq!(r.status(), 401);
    }
    let locked = app.try_login("guarded@laval.example", PASSWORD).await;
    assert_eq!(
        locked.status(),
        401,
        "three plus two wrong codes lock the account"
    );

    // An MFA token issued before a password change is dead.
    app.create_user("changer@laval.example", PASSWORD, &["viewer"])
        .await;
    let access = app.access_token("changer@laval.example", PASSWORD).await;
    let (secret, _) = app.enrol_totp(&access).await;
    app.clock.advance(Duration::from_secs(30));
    let pending = app.login("changer@laval.example", PASSWORD).await["mfa_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let changed = app
        .http
        .post(app.api("/auth/password"))
        .bearer_auth(&access)
        .json(&json!({ "current_password": PASSWORD, "new_password": "a brand new long passphrase 42" }))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200, "{:?}", changed.text().await);
    let late = app
        .mfa_verify(
            &pending,
            &eriop_tests::totp::oathtool(&secret, app.clock_unix()),
        )
        .await;
    assert_eq!(late.status(), 401);

    // The endpoint's own per-address throttle.
    let mut last = 0;
    for n in 0..45 {
        last = app
            .mfa_verify("not-a-token", &format!("{n:06}"))
            .await
            .status()
            .as_u16();
        if last == 429 {
            break;
        }
    }
    assert_eq!(last, 429);
}

/// Platform administrators use MFA: until enrolled, their sessions open only the enrolment;
/// and the first administrator's chosen password meets the password policy.
#[tokio::test]
async fn platform_administrators_use_mfa_and_a_strong_first_password() {
    let app = TestApp::spawn_with(eriop_tests::TestDb::migrated().await, |s| {
        s.platform_admins_need_mfa = true;
    })
    .await;
    let refused = app.get_as(&app.token, "/agencies").await;
    assert_eq!(refused.status(), 403);
    let problem: Value = refused.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("MFA"),
        "{problem}"
    );
    let (secret, _) = app.enrol_totp(&app.token).await;
    app.clock.advance(Duration::from_secs(30));
    let challenge = app.login(&app.admin_email, &app.admin_password).await;
    let verified = app
        .mfa_verify(
            challenge["mfa_token"].as_str().unwrap(),
            &eriop_tests::totp::oathtool(&secret, app.clock_unix()),
        )
        .await;
    assert_eq!(verified.status(), 200);
    let token = verified.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.get_as(&token, "/agencies").await.status(), 200);

    // bootstrap-admin --password-file: a weak password is refused, a strong one taken.
    let db = eriop_tests::TestDb::migrated().await;
    let mut settings = app.settings.clone();
    settings.database_url = db.url.clone().into();
    let weak = eriop_gateway::bootstrap::bootstrap_admin(
        &settings,
        "first@city.example",
        Some("password1".to_owned().into()),
    )
    .await;
    assert!(weak.is_err_and(|e| e.contains("--password-file")));
    let strong = eriop_gateway::bootstrap::bootstrap_admin(
        &settings,
        "first@city.example",
        Some("a long passphrase nobody guesses 7".to_owned().into()),
    )
    .await;
    assert!(strong.is_ok(), "{:?}", strong.err());
}

/// Removing one's MFA has the limits of a login: a code already used is refused, wrong codes
/// or passwords count toward the lockout, and a locked account cannot remove it.
#[tokio::test]
async fn removing_mfa_has_the_limits_of_a_login() {
    let app = TestApp::spawn().await;
    app.create_user("remover@laval.example", PASSWORD, &["viewer"])
        .await;
    let (access, _) = tokens(&app, "remover@laval.example").await;
    let (secret, _) = app.enrol_totp(&access).await;
    let disable = |body: Value| {
        app.http
            .delete(app.api("/auth/mfa/totp"))
            .bearer_auth(&access)
            .json(&body)
            .send()
    };
    // The code the enrolment confirmed is spent: not accepted again, in the same step.
    let spent = oathtool(&secret, app.clock_unix());
    let again = disable(json!({ "code": spent })).await.unwrap();
    assert_eq!(again.status(), 401);
    let problem: Value = again.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("already used"),
        "{problem}"
    );
    // Five wrong passwords lock the account; then even the right one removes nothing.
    for _ in 0..5 {
        let r = disable(json!({ "password": "not my password at all" }))
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let locked = disable(json!({ "password": PASSWORD })).await.unwrap();
    assert_eq!(locked.status(), 401);
    assert_eq!(
        app.try_login("remover@laval.example", PASSWORD)
            .await
            .status(),
        401
    );
}

/// The server key can be rotated: with the new key in ERIOP_SECRET_KEY and the old one in
/// ERIOP_SECRET_KEY_PREVIOUS, every user logs in (MFA and recovery codes too), personal data
/// reads back, and tokens signed before verify until they expire; `rotate-keys` re-wraps and
/// re-indexes, after which logins and personal data no longer need the old key.
#[tokio::test]
async fn the_server_key_can_be_rotated() {
    let mut app = TestApp::spawn().await;
    app.create_user("plain@laval.example", PASSWORD, &["viewer"])
        .await;
    app.create_user("second@laval.example", PASSWORD, &["viewer"])
        .await;
    let (mfa_access, _) = tokens(&app, "second@laval.example").await;
    let (secret, recovery) = app.enrol_totp(&mfa_access).await;
    let signed_before = app.token.clone();
    let old = app.settings.secret_key.clone().unwrap();
    let new: secrecy::SecretString = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
    .into();

    // The rotation: new key, old one kept as previous.
    app.settings.secret_key = Some(new.clone());
    app.settings.secret_key_previous = Some(old);
    app.kill_gateway();
    app.start_gateway().await;
    assert_eq!(app.get_as(&signed_before, "/auth/me").await.status(), 200);
    let plain = app.access_token("plain@laval.example", PASSWORD).await;
    let me: Value = app.get_as(&plain, "/auth/me").await.json().await.unwrap();
    assert_eq!(me["email"], "plain@laval.example");
    app.clock.advance(Duration::from_secs(30));
    let challenge = app.login("second@laval.example", PASSWORD).await;
    let code = oathtool(&secret, app.clock_unix());
    let verified = app
        .mfa_verify(challenge["mfa_token"].as_str().unwrap(), &code)
        .await;
    assert_eq!(
        verified.status(),
        200,
        "a TOTP secret sealed under the old key"
    );
    let challenge = app.login("second@laval.example", PASSWORD).await;
    let verified = app
        .mfa_verify(challenge["mfa_token"].as_str().unwrap(), &recovery[0])
        .await;
    assert_eq!(
        verified.status(),
        200,
        "a recovery code hashed under the old key"
    );
    // A new user cannot take an address indexed under the old key.
    let duplicate = app
        .request(Method::POST, "/users")
        .json(&json!({ "email": "plain@laval.example", "display_name": "Twin", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(duplicate.status(), 409);

    // rotate-keys: everyone re-wrapped and re-indexed; a second run has nothing to do.
    let report = eriop_gateway::rotation::rotate_keys(&app.settings, |_, _| {})
        .await
        .unwrap();
    assert_eq!(report.people, 3, "{report:?}");
    assert_eq!(
        (report.rewrapped, report.reindexed, report.unreadable),
        (3, 3, 0)
    );
    let again = eriop_gateway::rotation::rotate_keys(&app.settings, |_, _| {})
        .await
        .unwrap();
    assert_eq!((again.rewrapped, again.reindexed), (0, 0));

    // Without the old key at all: logins and personal data still work; old tokens do not.
    app.settings.secret_key_previous = None;
    app.kill_gateway();
    app.start_gateway().await;
    let plain = app.access_token("plain@laval.example", PASSWORD).await;
    let me: Value = app.get_as(&plain, "/auth/me").await.json().await.unwrap();
    assert_eq!(me["email"], "plain@laval.example");
    assert_eq!(app.get_as(&signed_before, "/auth/me").await.status(), 401);
}

/// An email signs in to one account platform-wide: a new account cannot take an address in
/// use in another agency, and the answer is the one for an address in use in the caller's own
/// agency, naming neither the account nor its agency.
#[tokio::test]
async fn an_email_taken_elsewhere_is_answered_as_one_taken_here() {
    let app = TestApp::spawn().await;
    let elsewhere = app
        .create_user("taken@elsewhere.example", PASSWORD, &["viewer"])
        .await;
    let (agency, admin) = app
        .admin_of_new_agency("Gatineau", "admin@gatineau.example")
        .await;
    let create = |email: &'static str| {
        app.http
            .post(app.api("/users"))
            .bearer_auth(&admin)
            .json(&json!({ "email": email, "display_name": "X", "password": PASSWORD }))
            .send()
    };
    assert_eq!(create("here@gatineau.example").await.unwrap().status(), 201);
    let mut answers = Vec::new();
    for email in ["here@gatineau.example", "Taken@Elsewhere.example"] {
        let response = create(email).await.unwrap();
        assert_eq!(response.status(), 409, "{email}");
        let text = response.text().await.unwrap();
        assert!(!text.contains(&elsewhere) && !text.contains(&app.admin_agency));
        let mut body: Value = serde_json::from_str(&text).unwrap();
        // What differs between any two answers: the request they answer.
        body.as_object_mut()
            .unwrap()
            .retain(|k, _| k != "request_id" && k != "instance");
        answers.push(body);
    }
    assert_eq!(answers[0], answers[1]);
    assert!(answers[0]["detail"].as_str().unwrap().contains("member"));
    assert!(!agency.is_empty());
}

/// A login for an address without an account does the work of one for an account (one
/// committed write: an event on the account, a counter for the unknown address), and gets
/// the same answer. The addresses are counted by their blind index, never in clear.
#[tokio::test]
async fn a_login_for_an_unknown_address_does_the_work_of_a_known_one() {
    let app = TestApp::spawn().await;
    let id = app
        .create_user("known@laval.example", PASSWORD, &["viewer"])
        .await;
    let events = |id: String| {
        let pool = app.db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM events WHERE aggregate_type = 'user' AND aggregate_id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let before = events(id.clone()).await;
    let known = app
        .try_login("known@laval.example", "not the password")
        .await;
    assert_eq!(known.status(), 401);
    let known: Value = known.json().await.unwrap();
    assert_eq!(
        events(id.clone()).await,
        before + 1,
        "the failure is an event"
    );

    let all_events = app.db.count("SELECT count(*) FROM events").await;
    for typed in [
        "nobody@laval.example",
        "Nobody@Laval.example",
        "not an email",
    ] {
        let unknown = app.try_login(typed, "not the password").await;
        assert_eq!(unknown.status(), 401);
        let unknown: Value = unknown.json().await.unwrap();
        assert_eq!(unknown["detail"], known["detail"]);
        assert_eq!(unknown["type"], known["type"]);
    }
    assert_eq!(
        app.db.count("SELECT count(*) FROM events").await,
        all_events
    );
    let counters: Vec<(String, i64)> =
        sqlx::query_as("SELECT address_index, failures FROM login_failures_unknown ORDER BY 2")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    let failures: Vec<i64> = counters.iter().map(|(_, n)| *n).collect();
    assert_eq!(
        failures,
        vec![1, 2],
        "one address typed twice (case aside), one once"
    );
    assert!(counters
        .iter()
        .all(|(index, _)| !index.contains("nobody") && index.len() == 64));
}

/// A snapshot is the user after its events, whichever event lands on the snapshot boundary.
/// cqrs-es 0.5 applies a command's events while deciding it and applied them again when
/// making the snapshot: `MfaEnabled` (which takes the pending secret) applied twice left no
/// secret, so a user who turned MFA on as their 20th event logged in with a password alone.
#[tokio::test]
async fn mfa_turned_on_at_a_snapshot_boundary_is_still_asked_for() {
    let app = TestApp::spawn().await;
    let id = app
        .create_user("boundary@laval.example", PASSWORD, &["viewer"])
        .await;
    let (db, user) = (&app.db, &id);
    let last = move || async move {
        db.count(&format!(
                "SELECT max(sequence) FROM events WHERE aggregate_type = 'user' AND aggregate_id = '{user}'"
        ))
        .await
    };
    // Logins (one event each) until enrolment starts at a multiple of 20, less one: its
    // confirmation (`MfaEnabled`, then the recovery codes) is the commit that crosses it.
    let mut access = String::new();
    while last().await % 20 != 18 {
        access = tokens(&app, "boundary@laval.example").await.0;
    }
    let (secret, _) = app.enrol_totp(&access).await;
    let snapshot: i64 = app
        .db
        .count(&format!(
            "SELECT last_sequence FROM snapshots WHERE aggregate_type = 'user' AND aggregate_id = '{id}'"
        ))
        .await;
    assert_eq!(
        snapshot % 20,
        1,
        "the confirmation's commit made the snapshot"
    );

    let login = app.login("boundary@laval.example", PASSWORD).await;
    assert_eq!(login["mfa_required"], true, "{login}");
    assert!(login["access_token"].is_null());
    app.clock.advance(Duration::from_secs(30));
    let code = oathtool(&secret, app.clock_unix());
    let verified = app
        .mfa_verify(login["mfa_token"].as_str().unwrap(), &code)
        .await;
    assert_eq!(verified.status(), 200);
}
