//! The one command path: with the projections stopped, every create and command route
//! answers `202 Accepted` (a stored write never answers 404 or 503), and each change shows
//! in its read model once the projections run again.

use std::time::Duration;

use eriop_tests::{wait, TestApp, TestDb};
use reqwest::Method;
use serde_json::{json, Value};

use crate::devices::{create_class, register};

/// The read model of each aggregate type, and its version column.
fn table(aggregate_type: &str) -> &'static str {
    match aggregate_type {
        "agency" => "agencies",
        "user" => "users",
        "role" => "roles",
        "device_class" => "device_classes",
        "device" => "devices",
        "registry" => "registries",
        other => panic!("no read model for {other}"),
    }
}

#[tokio::test]
async fn with_the_projections_stopped_every_command_answers_202_and_shows_later() {
    let mut app = TestApp::spawn_with(TestDb::migrated().await, |s| {
        s.read_your_writes_timeout_ms = 200;
    })
    .await;
    // What the commands act on, made while the projections run.
    let agency = app.created_agency("Sherbrooke").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let class = create_class(&app, 300).await;
    let device = register(&app, &class, "cp-main", "cp-1").await;
    let retired = register(&app, &class, "cp-main", "cp-2").await;
    app.assign_registry("cp-spare", &agency).await;
    let user = app
        .create_user(
            "cp.user@laval.example",
            "correct horse battery staple",
            &["viewer"],
        )
        .await;
    let role: Value = app
        .request(Method::POST, "/roles")
        .json(&json!({ "name": "Night crew", "permissions": ["devices:read"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let role = role["id"].as_str().unwrap().to_owned();

    app.stop_projections();
    let calls: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::POST,
            "/agencies".into(),
            Some(json!({ "name": "Magog" })),
        ),
        (
            Method::PATCH,
            format!("/agencies/{agency}"),
            Some(json!({ "name": "Sherbrooke (renamed)" })),
        ),
        (
            Method::POST,
            "/registries".into(),
            Some(json!({ "registry": "cp-new", "agency_id": agency })),
        ),
        (Method::DELETE, "/registries/cp-spare".into(), None),
        (
            Method::POST,
            "/device-classes".into(),
            Some(
                json!({ "name": "Cabinet", "functions": [{ "id": "comm001", "type": "CommunicationFunction" }] }),
            ),
        ),
        (
            Method::POST,
            "/devices".into(),
            Some(
                json!({ "class_id": class, "registry": "cp-main", "serial": "cp-3", "name": "Pole 3" }),
            ),
        ),
        (
            Method::POST,
            "/devices/bulk".into(),
            Some(
                json!([{ "class_id": class, "registry": "cp-main", "serial": "cp-4", "name": "Pole 4" }]),
            ),
        ),
        (
            Method::PATCH,
            format!("/devices/{device}"),
            Some(json!({ "name": "Pole 1 (renamed)" })),
        ),
        (
            Method::POST,
            format!("/devices/{device}/commands"),
            Some(json!({ "type": "fundamentum", "name": "reboot" })),
        ),
        (Method::DELETE, format!("/devices/{retired}"), None),
        (
            Method::POST,
            "/users".into(),
            Some(
                json!({ "email": "cp.new@laval.example", "display_name": "New", "roles": ["viewer"] }),
            ),
        ),
        (
            Method::POST,
            "/service-accounts".into(),
            Some(json!({ "name": "Integration", "roles": ["viewer"] })),
        ),
        (
            Method::PATCH,
            format!("/users/{user}"),
            Some(json!({ "display_name": "Renamed" })),
        ),
        (Method::PUT, format!("/users/{user}/roles/operator"), None),
        (
            Method::DELETE,
            format!("/users/{user}/roles/operator"),
            None,
        ),
        (
            Method::PUT,
            format!("/users/{user}/memberships/{agency}"),
            Some(json!({ "roles": ["viewer"] })),
        ),
        (
            Method::DELETE,
            format!("/users/{user}/memberships/{agency}"),
            None,
        ),
        (Method::POST, format!("/users/{user}/unlock"), None),
        // (POST /users/{id}/mfa/reset answers through the same `done` as unlock; it needs a
        // user enrolled in MFA, which auth.rs covers.)
        (Method::DELETE, format!("/users/{user}"), None),
        (Method::POST, format!("/users/{user}/reactivate"), None),
        (
            Method::POST,
            "/roles".into(),
            Some(json!({ "name": "Day crew", "permissions": [] })),
        ),
        (
            Method::PATCH,
            format!("/roles/{role}"),
            Some(json!({ "name": "Night crew (renamed)" })),
        ),
        (
            Method::PUT,
            format!("/roles/{role}/permissions/telemetry:read"),
            None,
        ),
        (
            Method::DELETE,
            format!("/roles/{role}/permissions/telemetry:read"),
            None,
        ),
        (Method::DELETE, format!("/roles/{role}"), None),
    ];
    let mut locations = Vec::new();
    for (method, path, body) in calls {
        let mut request = app.request(method.clone(), &path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned());
        let text = response.text().await.unwrap();
        assert_eq!(status, 202, "{method} {path}: {text}");
        if method == Method::POST && !path.contains("/users/") {
            // Every create says where its resource will be (the bulk import: in its report).
            if path != "/devices/bulk" {
                locations.push(location.unwrap_or_else(|| panic!("{path}: no Location")));
            }
        }
        let _: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    }
    assert_eq!(locations.len(), 8);

    app.start_projections().await;
    // Each read model catches up to its aggregates' last stored version ...
    let touched: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT aggregate_type, aggregate_id, max(sequence) FROM events GROUP BY 1, 2",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    for (aggregate_type, id, version) in touched {
        let sql = format!(
            "SELECT coalesce(max(version), 0) FROM {} WHERE id = $1::uuid",
            table(&aggregate_type)
        );
        wait::until_eq(
            &format!("{aggregate_type} {id} at version {version}"),
            Duration::from_secs(20),
            version,
            || {
                let (pool, sql, id) = (app.db.pool.clone(), sql.clone(), id.clone());
                async move {
                    sqlx::query_scalar::<_, i64>(&sql)
                        .bind(id)
                        .fetch_one(&pool)
                        .await
                        .unwrap()
                }
            },
        )
        .await;
    }
    // ... and every created resource answers at its Location.
    for location in locations {
        let response = app
            .http
            .get(format!("{}{location}", app.base))
            .bearer_auth(&app.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{location}");
    }
    let renamed = app.agency(&agency).await;
    assert_eq!(renamed["name"], "Sherbrooke (renamed)");
}

/// A backlog of events (the projections were down while commands were stored) is applied
/// in batches, many events to a transaction, and every change shows, in order: each agency
/// created and then renamed ends with its new name at its last version.
#[tokio::test]
async fn a_backlog_is_applied_in_batches_and_every_change_shows() {
    let (captured, _guard) = eriop_tests::capture::Captured::start("info");
    let mut app = TestApp::spawn_with(TestDb::migrated().await, |s| {
        s.read_your_writes_timeout_ms = 50;
    })
    .await;
    app.stop_projections();
    let mut ids = Vec::new();
    for n in 0..30 {
        let created = app.create_agency(&format!("Backlog {n}")).await;
        assert_eq!(created.status(), 202, "the projections are stopped");
        let created: Value = created.json().await.unwrap();
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    for (n, id) in ids.iter().enumerate() {
        let renamed = app
            .request(Method::PATCH, &format!("/agencies/{id}"))
            .json(&json!({ "name": format!("Backlog {n} renamed") }))
            .send()
            .await
            .unwrap();
        assert_eq!(renamed.status(), 202, "{:?}", renamed.text().await);
    }
    app.start_projections().await;
    for (n, id) in ids.iter().enumerate() {
        let expected = format!("Backlog {n} renamed");
        wait::until(
            "the renamed agency in the read model",
            Duration::from_secs(30),
            || async {
                let row: Option<(String, i64)> =
                    sqlx::query_as("SELECT name, version FROM agencies WHERE id = $1::uuid")
                        .bind(id)
                        .fetch_optional(&app.db.pool)
                        .await
                        .unwrap();
                (row == Some((expected.clone(), 2))).then_some(())
            },
        )
        .await;
    }
    let batched = captured
        .lines_of("eriop_projections::consumer")
        .into_iter()
        .filter(|l| l["message"] == "applied" && l["batch"].as_u64() > Some(1))
        .count();
    assert!(
        batched > 0,
        "a backlog of 60 events was applied one transaction each"
    );
}

/// Commands sent at once to one device take turns, and those that queued during a turn are
/// decided together and stored in one transaction (issue 13). Each is still decided on the
/// state the ones before it left and recorded as its own event with its own request id; a
/// refused one (after the decommission) changes nothing, and the others stand.
#[tokio::test]
async fn commands_sent_at_once_to_one_device_are_each_decided_and_recorded_on_their_own() {
    let app = TestApp::spawn().await;
    let class = create_class(&app, 300).await;
    let device = register(&app, &class, "cp-hot", "hot-1").await;
    let at_once = |requests: Vec<(Method, String, Option<Value>)>| {
        let sent = requests.into_iter().map(|(method, request_id, body)| {
            let request = app
                .request(method, &format!("/devices/{device}"))
                .header("x-request-id", &request_id);
            let request = match body {
                Some(body) => request.json(&body),
                None => request,
            };
            async move { (request_id, request.send().await.unwrap().status().as_u16()) }
        });
        futures::future::join_all(sent)
    };
    let rename = |n: usize| {
        (
            Method::PATCH,
            format!("rename-{n}"),
            Some(json!({ "name": format!("Pole {n}") })),
        )
    };

    // 40 renames at once: each accepted, each its own event, fewer transactions than events.
    let answered = at_once((0..40).map(rename).collect()).await;
    assert!(
        answered.iter().all(|(_, status)| *status == 200),
        "{answered:?}"
    );
    let events = device_events(&app, &device).await;
    assert_eq!(events.len(), 41);
    assert_eq!(recorded(&events[1..]), accepted(&answered));
    let mut transactions: Vec<i64> = events[1..].iter().map(|e| e.3).collect();
    transactions.dedup();
    assert!(
        transactions.len() < 40,
        "40 renames in {} transactions",
        transactions.len()
    );

    // Two decommissions among 20 more renames: one decommission stands, the other is
    // refused, as is every rename decided after it; what was accepted is what is recorded.
    let mut requests: Vec<_> = (40..60).map(rename).collect();
    requests.insert(3, (Method::DELETE, "retire-a".into(), None));
    requests.insert(10, (Method::DELETE, "retire-b".into(), None));
    let answered = at_once(requests).await;
    for (id, status) in &answered {
        assert!(
            matches!(status, 200 | 202 | 204 | 404 | 409),
            "{id} answered {status}"
        );
    }
    let retired = answered
        .iter()
        .filter(|(id, status)| id.starts_with("retire") && *status == 204)
        .count();
    assert_eq!(retired, 1, "{answered:?}");
    let events = device_events(&app, &device).await;
    assert_eq!(recorded(&events[41..]), accepted(&answered));
    assert_eq!(
        events.last().unwrap().1,
        "DeviceDecommissioned",
        "{events:?}"
    );
    let sequences: Vec<i64> = events.iter().map(|e| e.0).collect();
    assert_eq!(sequences, (1..=events.len() as i64).collect::<Vec<_>>());
}

/// (sequence, event type, request id, transaction) of each event of `device`, in order.
async fn device_events(app: &TestApp, device: &str) -> Vec<(i64, String, String, i64)> {
    sqlx::query_as(
        "SELECT sequence, event_type, metadata->>'request_id', xmin::text::bigint FROM events
          WHERE aggregate_type = 'device' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(device)
    .fetch_all(&app.db.pool)
    .await
    .unwrap()
}

/// The request ids of `events`, sorted.
fn recorded(events: &[(i64, String, String, i64)]) -> Vec<String> {
    let mut ids: Vec<String> = events.iter().map(|e| e.2.clone()).collect();
    ids.sort_unstable();
    ids
}

/// The request ids answered as done (200, 202 or 204), sorted.
fn accepted(answered: &[(String, u16)]) -> Vec<String> {
    let mut ids: Vec<String> = answered
        .iter()
        .filter(|(_, status)| matches!(status, 200 | 202 | 204))
        .map(|(id, _)| id.clone())
        .collect();
    ids.sort_unstable();
    ids
}

/// Read your writes without polling (issue 13): each projection says on core NATS which
/// version of which row it committed, and a command waiting for its row looks at the read
/// model when that hint comes, not only after a pause.
#[tokio::test]
async fn a_projected_write_is_hinted_on_nats_and_wakes_the_waiting_command() {
    use futures::StreamExt;
    let app = TestApp::spawn().await;
    let mut hints = app
        .subscribed(app.topology.projected_subject("agency", "*"))
        .await;

    let agency = app.created_agency("Magog").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let renamed = app
        .patch_agency(&agency, json!({ "name": "Magog-Orford" }))
        .await;
    assert_eq!(renamed.status(), 200);

    // The agency's hints, in order: version 1 (created), then 2 (renamed). Other agencies'
    // hints (the harness's own) may come between.
    let mut versions = Vec::new();
    while versions.last() != Some(&2) {
        let hint = tokio::time::timeout(Duration::from_secs(10), hints.next())
            .await
            .expect("a hint for each projected write")
            .unwrap();
        if hint.subject.ends_with(&agency) {
            versions.push(
                std::str::from_utf8(&hint.payload)
                    .unwrap()
                    .parse::<i64>()
                    .unwrap(),
            );
        }
    }
    assert_eq!(versions, [1, 2]);

    // The gateway counts its looks by what woke them: the hints did wake some. Without
    // hints, every look after the first would be a pause's.
    let metrics = crate::metrics::scrape(&app, &app.base).await;
    let looks = |woken_by: &str| {
        crate::metrics::sample(
            &metrics,
            "eriop_gateway_read_your_writes_looks_total",
            &format!("woken_by=\"{woken_by}\""),
        )
        .unwrap_or(0.0)
    };
    assert!(looks("first") >= 2.0, "{metrics}");
    assert!(looks("hint") >= 1.0, "{metrics}");
}

/// A hint is a wake-up, never the truth: one forged for a write the read model does not
/// show yet does not make the command answer as if it did.
#[tokio::test]
async fn a_forged_hint_does_not_answer_a_command_early() {
    let mut app = TestApp::spawn_with(TestDb::migrated().await, |s| {
        s.read_your_writes_timeout_ms = 1_500;
    })
    .await;
    let agency = app.created_agency("Coaticook").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.stop_projections();
    let client = async_nats::connect(eriop_tests::nats_url()).await.unwrap();
    let subject = app.topology.projected_subject("agency", &agency);
    let forger = tokio::spawn(async move {
        // Says every version up to 1,000 is projected, again and again, while it waits.
        loop {
            client
                .publish(subject.clone(), "1000".into())
                .await
                .unwrap();
            client.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let renamed = app
        .patch_agency(&agency, json!({ "name": "Coaticook-Nord" }))
        .await;
    forger.abort();
    assert_eq!(
        renamed.status(),
        202,
        "the read model does not show the rename"
    );
    app.start_projections().await;
    wait::until("the rename shows", Duration::from_secs(30), || async {
        (app.agency(&agency).await["name"] == "Coaticook-Nord").then_some(())
    })
    .await;
}
