//! The OpenAPI document describes routes that exist, and is served with its docs page.

use eriop_tests::TestApp;
use reqwest::Method;
use serde_json::Value;

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let app = TestApp::spawn().await;
    let doc: Value = app
        .http
        .get(app.api("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            operations += 1;
            let url = format!(
                "{}{}",
                app.base,
                path.replace("{id}", &uuid::Uuid::new_v4().to_string())
            );
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            // No token and no body: whatever the route answers, it must not be the router's
            // "no such route" or "method not allowed".
            let response = app.http.request(method.clone(), &url).send().await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            assert_ne!(status, 405, "{method} {path} is not routed");
            assert!(
                !(status == 404 && text.contains("no such route")),
                "{method} {path} is not routed"
            );
            // What the document says about authentication holds.
            let open = operation["security"]
                .as_array()
                .is_some_and(|s| s.is_empty());
            if !open {
                assert_eq!(status, 401, "{method} {path} needs a token: {text}");
            }
        }
    }
    assert!(operations >= 25, "{operations} operations");
    let page = app.http.get(app.api("/docs")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("openapi.json"));
}

/// The authorization matrix, generated from the document: every guarded operation declares
/// its permission; a token without it gets 403 naming it; a token with it gets past
/// authorization (whatever the dummy request then earns).
#[tokio::test]
async fn every_guarded_operation_declares_and_enforces_its_permission() {
    let (captured, _guard) = eriop_tests::capture::Captured::start("info");
    let app = TestApp::spawn().await;
    let mut decisions: Vec<(String, &str, String)> = Vec::new();
    app.create_user(
        "matrix@laval.example",
        "correct horse battery staple",
        &["viewer"],
    )
    .await;
    let viewer = app
        .login("matrix@laval.example", "correct horse battery staple")
        .await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // A viewer may read devices and telemetry: those are denied to a user whose only role
    // grants audit:read.
    let role: Value = app
        .request(Method::POST, "/roles")
        .json(&serde_json::json!({"name": "auditors", "permissions": ["audit:read"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let auditor_id = app
        .create_user("auditor@laval.example", "correct horse battery staple", &[])
        .await;
    let assigned = app
        .request(
            Method::PUT,
            &format!("/users/{auditor_id}/roles/{}", role["id"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(assigned.status(), 204, "{:?}", assigned.text().await);
    let auditor = app
        .login("auditor@laval.example", "correct horse battery staple")
        .await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let doc: Value = app
        .http
        .get(app.api("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let catalogue: Vec<String> = eriop_domain::Permission::ALL
        .iter()
        .map(|p| p.as_str().to_owned())
        .collect();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let open = operation["security"]
                .as_array()
                .is_some_and(|s| s.is_empty());
            if open {
                continue;
            }
            let permission = operation["x-permission"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} declares no x-permission"));
            if permission == "self" {
                continue;
            }
            assert!(
                catalogue.contains(&permission.to_owned()),
                "{method} {path}: {permission}"
            );
            let url = format!(
                "{}{}",
                app.base,
                path.replace("{id}", &uuid::Uuid::new_v4().to_string())
                    .replace("{role}", "viewer")
                    .replace("{agency_id}", &uuid::Uuid::new_v4().to_string())
                    .replace("{permission}", "audit:read")
                    .replace("{command_id}", "1")
                    .replace("{aggregate_type}", "user")
            );
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (deny_id, allow_id) = (
                format!("matrix-{checked}-deny"),
                format!("matrix-{checked}-allow"),
            );
            let denied = app
                .http
                .request(method.clone(), &url)
                .bearer_auth(denied_token(permission, &viewer, &auditor))
                .header("x-request-id", &deny_id)
                .send()
                .await
                .unwrap();
            assert_eq!(denied.status(), 403, "{method} {path} without {permission}");
            let problem: Value = denied.json().await.unwrap();
            assert!(
                problem["detail"].as_str().unwrap().contains(permission),
                "{method} {path}"
            );
            let allowed = app
                .http
                .request(method.clone(), &url)
                .bearer_auth(&app.token)
                .header("x-request-id", &allow_id)
                .send()
                .await
                .unwrap();
            decisions.push((deny_id, "deny", permission.to_owned()));
            decisions.push((allow_id, "allow", permission.to_owned()));
            let status = allowed.status().as_u16();
            assert!(
                status != 401 && status != 403,
                "{method} {path} with {permission}: {status}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 15, "{checked} operations checked");

    // Every decision of the matrix is one authz line with its fields, and nothing personal.
    let lines = captured.lines_of("authz");
    assert_eq!(decisions.len(), 2 * checked);
    for (request_id, outcome, permission) in decisions {
        let found: Vec<&Value> = lines
            .iter()
            .filter(|l| l["request_id"] == request_id.as_str())
            .collect();
        assert_eq!(found.len(), 1, "one authz line for {request_id}");
        let line = found[0];
        assert_eq!(line["outcome"], outcome, "{request_id}");
        assert_eq!(line["permission"], permission.as_str(), "{request_id}");
        for field in ["user_id", "agency_id", "resource_id"] {
            assert!(line[field].is_string(), "{request_id}: {field}");
        }
        assert!(!line.to_string().contains("@laval.example"));
    }
}

/// The converse of the tests above: every route the gateway registers (read from
/// gateway/src/http/router.rs, where the router is built) is in the document, so an undocumented
/// route, and with it a route without a declared permission, fails here.
#[test]
fn every_registered_route_is_documented() {
    let source = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../gateway/src/http/router.rs"
    ))
    .unwrap();
    let doc = eriop_gateway::openapi::document("/api/v1");
    let mut routes = 0;
    for chunk in source.split(".route(").skip(1) {
        let chunk = chunk.split(".fallback(").next().unwrap();
        let path = chunk
            .split('"')
            .nth(1)
            .unwrap()
            .replace("{api}", "/api/v1")
            .replace("{{", "{")
            .replace("}}", "}");
        let mut methods = 0;
        for method in ["get", "post", "put", "patch", "delete"] {
            let called = chunk.contains(&format!("({method}("))
                || chunk.contains(&format!(" {method}("))
                || chunk.contains(&format!(".{method}("));
            if called {
                methods += 1;
                assert!(
                    doc["paths"][&path][method].is_object(),
                    "{} {path} is routed but not in gateway/api/openapi.json",
                    method.to_uppercase()
                );
            }
        }
        assert!(methods > 0, "no method found for {path}");
        routes += 1;
    }
    assert!(routes >= 25, "{routes} routes read");
}

/// The third column of the matrix: a token of another agency, holding the permission there,
/// gets 404 for every resource of this agency, on every operation that names one.
#[tokio::test]
async fn another_agencys_resources_answer_404_on_every_operation() {
    let app = TestApp::spawn().await;
    let password = "correct horse battery staple";
    // Resources of agency A (the platform agency): a user and a role.
    let user_a = app
        .create_user("resident@laval.example", password, &["viewer"])
        .await;
    let role_a: Value = app
        .request(Method::POST, "/roles")
        .json(&serde_json::json!({ "name": "A role", "permissions": ["users:read"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let role_a = role_a["id"].as_str().unwrap().to_owned();
    // ... and a device (with its class).
    let class_a: Value = app
        .request(Method::POST, "/device-classes")
        .json(&serde_json::json!({ "name": "Light", "functions": [{"id": "basic", "type": "BasicFunction"}] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    app.own_registry("reg-a").await;
    let device_a: Value = app
        .request(Method::POST, "/devices")
        .json(&serde_json::json!({
            "class_id": class_a["id"], "registry": "reg-a", "serial": "SN-A", "name": "A light",
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let device_a = device_a["id"].as_str().unwrap().to_owned();
    // An admin of agency B, holding every agency permission there.
    let (_, token_b) = app.admin_of_new_agency("Agency B", "admin@b.example").await;

    let doc: Value = app
        .http
        .get(app.api("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let permission = operation["x-permission"].as_str().unwrap_or("");
            // Agencies are the platform's; only paths that name a resource of an agency.
            if !path.contains("{id}") || permission == "agencies:manage" || permission.is_empty() {
                continue;
            }
            let id = if path.starts_with("/api/v1/roles") {
                &role_a
            } else if path.starts_with("/api/v1/devices") {
                &device_a
            } else {
                &user_a
            };
            let url = format!(
                "{}{}",
                app.base,
                path.replace("{id}", id)
                    .replace("{role}", "viewer")
                    .replace("{permission}", "audit:read")
                    .replace("{command_id}", "1")
                    .replace("{aggregate_type}", "user")
            );
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let mut request = app.http.request(method.clone(), &url).bearer_auth(&token_b);
            if matches!(method, Method::PATCH) {
                // A valid body, so that only the resource's agency decides the answer.
                let field =
                    if path.starts_with("/api/v1/roles") || path.starts_with("/api/v1/devices") {
                        "name"
                    } else {
                        "display_name"
                    };
                request = request.json(&serde_json::json!({ field: "x" }));
            }
            if matches!(method, Method::POST) && path.ends_with("/commands") {
                request =
                    request.json(&serde_json::json!({ "type": "fundamentum", "name": "reboot" }));
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 404, "{method} {path} of another agency");
            checked += 1;
        }
    }
    assert!(checked >= 12, "{checked} operations checked");
}

/// A token that lacks `permission`: the viewer's, unless the viewer role grants it.
fn denied_token<'a>(permission: &str, viewer: &'a str, auditor: &'a str) -> &'a str {
    let viewer_has = eriop_domain::Permission::of_builtin_role("viewer")
        .iter()
        .any(|p| p.as_str() == permission);
    if viewer_has {
        auditor
    } else {
        viewer
    }
}
