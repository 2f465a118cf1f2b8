//! Bad input gets the right 4xx problem body, and nothing is stored.

use eriop_tests::TestApp;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

struct Case {
    what: &'static str,
    method: Method,
    path: String,
    token: Option<&'static str>,
    content_type: Option<&'static str>,
    body: Option<String>,
    status: u16,
    detail_has: &'static str,
}

fn case(
    what: &'static str,
    method: Method,
    path: impl Into<String>,
    body: Option<String>,
    status: u16,
    detail_has: &'static str,
) -> Case {
    Case {
        what,
        method,
        path: path.into(),
        token: Some("valid"),
        content_type: Some("application/json"),
        body,
        status,
        detail_has,
    }
}

#[tokio::test]
async fn bad_requests_answer_problem_json_and_store_nothing() {
    let app = TestApp::spawn().await;
    let existing = app.created_agency("Laval").await;
    let existing_id = existing["id"].as_str().unwrap().to_owned();
    let events_before = app.db.count("SELECT count(*) FROM events").await;
    let unknown = uuid::Uuid::new_v4();
    let big_name = "x".repeat(10 * 1024);

    let mut cases = vec![
        case(
            "broken JSON",
            Method::POST,
            "/agencies",
            Some(r#"{"name": "#.into()),
            400,
            "JSON",
        ),
        case(
            "wrong type",
            Method::POST,
            "/agencies",
            Some(r#"{"name": 5}"#.into()),
            422,
            "invalid type",
        ),
        case(
            "unknown field",
            Method::POST,
            "/agencies",
            Some(r#"{"name": "A", "mayor": "x"}"#.into()),
            422,
            "unknown field",
        ),
        case(
            "missing field",
            Method::POST,
            "/agencies",
            Some("{}".into()),
            422,
            "missing field",
        ),
        case(
            "empty name",
            Method::POST,
            "/agencies",
            Some(r#"{"name": ""}"#.into()),
            422,
            "name: must not be empty",
        ),
        case(
            "blank name",
            Method::POST,
            "/agencies",
            Some(r#"{"name": "   "}"#.into()),
            422,
            "must not be empty",
        ),
        case(
            "10 KB name",
            Method::POST,
            "/agencies",
            Some(json!({ "name": big_name }).to_string()),
            422,
            "at most 200",
        ),
        case(
            "control characters",
            Method::POST,
            "/agencies",
            Some(json!({ "name": "a\u{7}b" }).to_string()),
            422,
            "control",
        ),
        case(
            "existing id",
            Method::POST,
            "/agencies",
            Some(json!({ "id": existing_id, "name": "Again" }).to_string()),
            409,
            "already exists",
        ),
        case(
            "malformed id in body",
            Method::POST,
            "/agencies",
            Some(r#"{"id": "nope", "name": "A"}"#.into()),
            422,
            "UUID",
        ),
        case(
            "body over the limit",
            Method::POST,
            "/agencies",
            Some(json!({ "name": "x".repeat(70 * 1024) }).to_string()),
            413,
            "too large",
        ),
        case(
            "unknown id",
            Method::GET,
            format!("/agencies/{unknown}"),
            None,
            404,
            "no such agency",
        ),
        case(
            "malformed id",
            Method::GET,
            "/agencies/not-a-uuid",
            None,
            400,
            "UUID",
        ),
        case(
            "patch of an unknown id",
            Method::PATCH,
            format!("/agencies/{unknown}"),
            Some(r#"{"name": "B"}"#.into()),
            404,
            "no such agency",
        ),
        case(
            "empty patch",
            Method::PATCH,
            format!("/agencies/{existing_id}"),
            Some("{}".into()),
            422,
            "nothing to change",
        ),
        case(
            "bad status",
            Method::PATCH,
            format!("/agencies/{existing_id}"),
            Some(r#"{"status": "deleted"}"#.into()),
            422,
            "unknown variant",
        ),
        case(
            "bad limit",
            Method::GET,
            "/agencies?limit=0",
            None,
            422,
            "limit",
        ),
        case(
            "non-numeric limit",
            Method::GET,
            "/agencies?limit=many",
            None,
            400,
            "limit",
        ),
        case(
            "unknown query parameter",
            Method::GET,
            "/agencies?sort=name",
            None,
            400,
            "unknown field",
        ),
        case(
            "method not allowed",
            Method::DELETE,
            format!("/agencies/{existing_id}"),
            None,
            405,
            "method",
        ),
        case(
            "unknown route",
            Method::GET,
            "/nowhere",
            None,
            404,
            "no such route",
        ),
    ];
    let mut no_json = case(
        "not JSON",
        Method::POST,
        "/agencies",
        Some("name=A".into()),
        415,
        "application/json",
    );
    no_json.content_type = Some("application/x-www-form-urlencoded");
    cases.push(no_json);
    for (what, token) in [("no token", None), ("wrong token", Some("wrong"))] {
        let mut c = case(
            what,
            Method::POST,
            "/agencies",
            Some(r#"{"name": "A"}"#.into()),
            401,
            "token",
        );
        c.token = token;
        cases.push(c);
        let mut c = case(
            what,
            Method::GET,
            format!("/agencies/{existing_id}"),
            None,
            401,
            "",
        );
        c.token = token;
        cases.push(c);
    }

    for c in cases {
        let mut request = app.http.request(c.method.clone(), app.api(&c.path));
        match c.token {
            Some("valid") => request = request.bearer_auth(&app.token),
            Some(other) => request = request.bearer_auth(other),
            None => {}
        }
        if let Some(body) = c.body {
            request = request.body(body);
            if let Some(ct) = c.content_type {
                request = request.header("content-type", ct);
            }
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            response.headers().contains_key("x-request-id"),
            "{}",
            c.what
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(
            status,
            StatusCode::from_u16(c.status).unwrap(),
            "{}: {problem}",
            c.what
        );
        assert_eq!(content_type, "application/problem+json", "{}", c.what);
        assert_eq!(problem["status"], c.status, "{}", c.what);
        assert!(
            problem["type"].as_str().unwrap().starts_with("https://"),
            "{}",
            c.what
        );
        assert!(problem["title"].is_string(), "{}", c.what);
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.to_lowercase().contains(&c.detail_has.to_lowercase()),
            "{}: detail {detail:?} should mention {:?}",
            c.what,
            c.detail_has
        );
    }

    assert_eq!(
        app.db.count("SELECT count(*) FROM events").await,
        events_before,
        "nothing stored"
    );
    // The platform agency of the bootstrap, and the one made above.
    assert_eq!(app.db.count("SELECT count(*) FROM agencies").await, 2);
}

#[tokio::test]
async fn agency_routes_need_the_agencies_manage_permission() {
    let app = TestApp::spawn().await;
    app.create_user(
        "operator@eriop.test",
        "correct horse battery staple",
        &["operator"],
    )
    .await;
    let login = app
        .login("operator@eriop.test", "correct horse battery staple")
        .await;
    let token = login["access_token"].as_str().unwrap();
    let response = app.get_as(token, "/agencies").await;
    assert_eq!(response.status(), 403);
    let problem: Value = response.json().await.unwrap();
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .contains("agencies:manage"));
    let events_before = app
        .db
        .count("SELECT count(*) FROM events WHERE aggregate_type = 'agency'")
        .await;
    let response = app
        .http
        .post(app.api("/agencies"))
        .bearer_auth(token)
        .json(&json!({ "name": "Not allowed" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM events WHERE aggregate_type = 'agency'")
            .await,
        events_before
    );
}

/// What schemathesis found (make test-contract), as regression tests: a NUL in a query string
/// answered 500, a platform administrator got an empty user for any UUID, and a registry's
/// Location header carried raw UTF-8.
#[tokio::test]
async fn what_the_contract_run_found_stays_fixed() {
    let app = TestApp::spawn().await;
    let nul = app
        .request(Method::GET, "/audit/events?aggregate_id=a%00b")
        .send()
        .await
        .unwrap();
    assert_eq!(nul.status(), 422, "{:?}", nul.text().await);
    let nobody = app
        .request(Method::GET, &format!("/users/{}", uuid::Uuid::new_v4()))
        .send()
        .await
        .unwrap();
    assert_eq!(nobody.status(), 404);
    let created = app
        .request(Method::POST, "/registries")
        .json(&serde_json::json!({ "registry": "Ville-Québec", "agency_id": app.admin_agency }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{:?}", created.text().await);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(location, "/api/v1/registries/Ville-Qu%C3%A9bec");
    let shown = app
        .http
        .get(format!("{}{location}", app.base))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(shown.status(), 200);
}
