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
    let app = TestApp::spawn().await;
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
            );
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let denied = app
                .http
                .request(method.clone(), &url)
                .bearer_auth(&viewer)
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
                .send()
                .await
                .unwrap();
            let status = allowed.status().as_u16();
            assert!(
                status != 401 && status != 403,
                "{method} {path} with {permission}: {status}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 15, "{checked} operations checked");
}
