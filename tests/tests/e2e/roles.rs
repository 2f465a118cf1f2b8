//! Roles of an agency: defined, given, changed, deleted; never another agency's.

use eriop_tests::TestApp;
use reqwest::Method;
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery staple";

#[tokio::test]
async fn an_agency_role_gives_its_permissions_and_changes_apply_at_once() {
    let app = TestApp::spawn().await;
    let created = app
        .request(Method::POST, "/roles")
        .json(&json!({ "name": "Auditors", "permissions": ["audit:read"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let role: Value = created.json().await.unwrap();
    let role_id = role["id"].as_str().unwrap().to_owned();
    assert_eq!(role["permissions"], json!(["audit:read"]));

    let listed: Value = app
        .request(Method::GET, "/roles")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "platform-admin",
            "agency-admin",
            "operator",
            "viewer",
            "Auditors"
        ]
    );

    let user = app
        .create_user("reader@laval.example", PASSWORD, &["viewer"])
        .await;
    let token = app.login("reader@laval.example", PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.get_as(&token, "/audit/events").await.status(), 403);
    let give = app
        .request(Method::PUT, &format!("/users/{user}/roles/{role_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(give.status(), 204);
    assert_eq!(app.get_as(&token, "/audit/events").await.status(), 200);

    // Taking the permission from the role reaches its holders at once.
    let revoked = app
        .request(
            Method::DELETE,
            &format!("/roles/{role_id}/permissions/audit:read"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(app.get_as(&token, "/audit/events").await.status(), 403);
    let granted = app
        .request(
            Method::PUT,
            &format!("/roles/{role_id}/permissions/audit:read"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(granted.status(), 200);
    assert_eq!(app.get_as(&token, "/audit/events").await.status(), 200);

    // Deleted: gone from the list and from its holders.
    let deleted = app
        .request(Method::DELETE, &format!("/roles/{role_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(app.get_as(&token, "/audit/events").await.status(), 403);
    assert_eq!(
        app.request(Method::GET, &format!("/roles/{role_id}"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn built_in_roles_cannot_be_changed_and_bad_roles_are_refused() {
    let app = TestApp::spawn().await;
    let viewer: Value = app
        .request(Method::GET, "/roles/viewer")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(viewer["built_in"], true);
    assert_eq!(
        viewer["permissions"],
        json!(["devices:read", "telemetry:read"])
    );
    for (method, path) in [
        (Method::DELETE, "/roles/viewer"),
        (Method::PUT, "/roles/viewer/permissions/users:read"),
    ] {
        let refused = app.request(method, path).send().await.unwrap();
        assert_eq!(refused.status(), 409, "{path}");
    }
    for (body, field) in [
        (json!({ "name": "viewer" }), "built-in"),
        (json!({ "name": "" }), "name"),
        (
            json!({ "name": "X", "permissions": ["devices:delete_all"] }),
            "unknown permission",
        ),
        (
            json!({ "name": "X", "permissions": ["agencies:manage"] }),
            "platform",
        ),
    ] {
        let response = app
            .request(Method::POST, "/roles")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "{body}");
        let problem: Value = response.json().await.unwrap();
        assert!(
            problem["detail"].as_str().unwrap().contains(field),
            "{problem}"
        );
    }
}

#[tokio::test]
async fn another_agencys_roles_and_users_do_not_exist_for_a_caller() {
    let app = TestApp::spawn().await;
    // A role of the platform agency (A).
    let role: Value = app
        .request(Method::POST, "/roles")
        .json(&json!({ "name": "A only", "permissions": ["users:read"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let role_id = role["id"].as_str().unwrap().to_owned();
    // An admin of agency B, by membership.
    let b = app.created_agency("Agency B").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let admin_b = app
        .create_user("admin.b@b.example", PASSWORD, &["viewer"])
        .await;
    let membership = app
        .request(Method::PUT, &format!("/users/{admin_b}/memberships/{b}"))
        .json(&json!({ "roles": ["agency-admin"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(membership.status(), 204);
    let home_token = app.login("admin.b@b.example", PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let token_b: Value = app
        .http
        .post(app.api("/auth/switch-agency"))
        .bearer_auth(&home_token)
        .json(&json!({ "agency_id": b }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token_b = token_b["access_token"].as_str().unwrap().to_owned();

    // B cannot see A's role, give it, or change it; nor see A's users.
    let as_b = |method: Method, path: String| {
        app.http
            .request(method, app.api(&path))
            .bearer_auth(&token_b)
            .send()
    };
    assert_eq!(
        as_b(Method::GET, format!("/roles/{role_id}"))
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        as_b(
            Method::PUT,
            format!("/roles/{role_id}/permissions/audit:read")
        )
        .await
        .unwrap()
        .status(),
        404
    );
    assert_eq!(
        as_b(Method::PUT, format!("/users/{admin_b}/roles/{role_id}"))
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        as_b(Method::GET, format!("/users/{}", app.admin_id))
            .await
            .unwrap()
            .status(),
        404
    );
    let listed: Value = as_b(Method::GET, "/roles".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["id"] != role_id.as_str()));
    let users: Value = as_b(Method::GET, "/users".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        users["items"].as_array().unwrap().is_empty(),
        "A's users are not B's: {users}"
    );
    // A role B creates is B's.
    let own = as_b(Method::POST, "/roles".into()).await.unwrap();
    assert_eq!(own.status(), 415, "no body: the route is B's to use");
}

#[tokio::test]
async fn only_the_platform_lists_another_agencys_users_by_naming_it() {
    let app = TestApp::spawn().await;
    let b = app.created_agency("Agency B").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let member = app
        .create_user("member@b.example", PASSWORD, &["viewer"])
        .await;
    let granted = app
        .request(Method::PUT, &format!("/users/{member}/memberships/{b}"))
        .json(&json!({ "roles": ["agency-admin"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(granted.status(), 204);
    // The platform admin names agency B explicitly: B's users (none of its own yet).
    let listed: Value = app
        .request(Method::GET, &format!("/users?agency_id={b}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(listed["items"].as_array().unwrap().is_empty());
    // An agency admin naming another agency: it does not exist for them.
    app.create_user("local.admin@laval.example", PASSWORD, &["agency-admin"])
        .await;
    let token = app.login("local.admin@laval.example", PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = app.get_as(&token, &format!("/users?agency_id={b}")).await;
    assert_eq!(refused.status(), 404);
}

/// Platform powers come from the caller's roles now, not from its token: a platform admin
/// demoted to agency admin keeps a valid token, and at its next request it can neither give
/// the platform role, nor read another agency's trail or users.
#[tokio::test]
async fn a_demoted_platform_admin_loses_platform_powers_at_its_next_request() {
    let app = TestApp::spawn().await;
    let other = app.created_agency("Ville de Laval").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let password = "correct horse battery staple";
    let id = app
        .create_user("platform@eriop.example", password, &["platform-admin"])
        .await;
    let token = app.access_token("platform@eriop.example", password).await;
    let as_platform = |method: Method, path: String| {
        let (http, url, token) = (app.http.clone(), app.api(&path), token.clone());
        async move { http.request(method, url).bearer_auth(token) }
    };
    let listed = as_platform(Method::GET, format!("/users?agency_id={other}"))
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(
        listed.status(),
        200,
        "a platform admin lists another agency's users"
    );

    for (method, role) in [
        (Method::PUT, "agency-admin"),
        (Method::DELETE, "platform-admin"),
    ] {
        let changed = app
            .request(method, &format!("/users/{id}/roles/{role}"))
            .send()
            .await
            .unwrap();
        assert_eq!(changed.status(), 204);
    }

    // The same, unexpired token.
    let give = as_platform(Method::POST, "/users".into())
        .await
        .json(&serde_json::json!({
            "email": "second@eriop.example", "display_name": "Second",
            "password": password, "roles": ["platform-admin"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(give.status(), 403, "{:?}", give.text().await);
    let listed = as_platform(Method::GET, format!("/users?agency_id={other}"))
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 404);
    let trail: serde_json::Value = as_platform(Method::GET, "/audit/events?limit=1000".into())
        .await
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = trail["items"].as_array().unwrap();
    assert!(!items.is_empty());
    assert!(
        items
            .iter()
            .all(|e| e["metadata"]["agency_id"] == app.admin_agency.as_str()),
        "another agency's events in an agency admin's trail"
    );
    let verify = as_platform(
        Method::GET,
        format!("/audit/verify?aggregate_type=agency&aggregate_id={other}"),
    )
    .await
    .send()
    .await
    .unwrap();
    assert_eq!(verify.status(), 404);
}

/// Found by schemathesis: the platform administrator could deactivate themselves or drop
/// their own platform-admin role, leaving nobody able to undo it. Another administrator can.
#[tokio::test]
async fn nobody_takes_away_their_own_access() {
    let app = TestApp::spawn().await;
    let me = app.admin_id.clone();
    for (method, path) in [
        (Method::DELETE, format!("/users/{me}")),
        (Method::DELETE, format!("/users/{me}/roles/platform-admin")),
        (
            Method::DELETE,
            format!("/users/{me}/memberships/{}", app.admin_agency),
        ),
    ] {
        let refused = app.request(method, &path).send().await.unwrap();
        assert_eq!(refused.status(), 409, "{path}");
        let problem: serde_json::Value = refused.json().await.unwrap();
        assert!(problem["detail"]
            .as_str()
            .unwrap()
            .contains("another administrator"));
    }
    // Still a platform administrator, still signed in.
    let me_now = app.request(Method::GET, "/auth/me").send().await.unwrap();
    assert_eq!(me_now.status(), 200);
    let body: serde_json::Value = me_now.json().await.unwrap();
    assert!(body["roles"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r == "platform-admin"));
    // Another administrator may deactivate this one.
    app.create_user("second.admin@eriop.test", PASSWORD, &["platform-admin"])
        .await;
    let other_token = app.access_token("second.admin@eriop.test", PASSWORD).await;
    let by_other = app
        .http
        .delete(app.api(&format!("/users/{me}")))
        .bearer_auth(&other_token)
        .send()
        .await
        .unwrap();
    assert!(
        by_other.status().is_success(),
        "{:?}",
        by_other.text().await
    );
}
