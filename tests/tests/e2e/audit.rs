//! The event store as an audit trail: listed per agency, and verifiable.

use eriop_tests::TestApp;
use reqwest::Method;
use serde_json::{json, Value};

async fn verify(app: &TestApp, token: &str, aggregate_type: &str, id: &str) -> reqwest::Response {
    app.http
        .get(app.api("/audit/verify"))
        .query(&[("aggregate_type", aggregate_type), ("aggregate_id", id)])
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// Renames agency `id` to each of `names`, asserting each answer.
async fn rename(app: &TestApp, id: &str, names: &[&str]) {
    for name in names {
        let response = app.patch_agency(id, json!({ "name": name })).await;
        assert_eq!(response.status(), 200, "rename to {name}");
    }
}

#[tokio::test]
async fn an_altered_event_breaks_the_chain_and_auditors_see_where() {
    let app = TestApp::spawn().await;
    let agency = app.created_agency("Laval").await;
    let id = agency["id"].as_str().unwrap().to_owned();
    rename(&app, &id, &["Laval 2", "Laval 3", "Laval 4"]).await;
    let report: Value = verify(&app, &app.token, "agency", &id)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["verified"], true);
    assert_eq!(report["events"], 4);

    // Someone with the database's owner rights edits history behind the triggers' back.
    let mut tx = app.db.pool.begin().await.unwrap();
    sqlx::query("ALTER TABLE events DISABLE TRIGGER events_append_only")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE events SET payload = '{\"AgencyRenamed\": {\"name\": \"Forged\"}}'
          WHERE aggregate_id = $1 AND sequence = 3",
    )
    .bind(&id)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("ALTER TABLE events ENABLE TRIGGER events_append_only")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let report: Value = verify(&app, &app.token, "agency", &id)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["verified"], false);
    assert_eq!(report["first_broken_sequence"], 3);
}

#[tokio::test]
async fn the_trail_is_scoped_to_the_agency_and_needs_audit_read() {
    let app = TestApp::spawn().await;
    let other_agency = app.created_agency("Longueuil").await;
    let other = other_agency["id"].as_str().unwrap().to_owned();
    // An agency admin (audit:read) of the platform agency, and a viewer (no audit:read).
    app.create_user(
        "auditor@laval.example",
        "correct horse battery staple",
        &["agency-admin"],
    )
    .await;
    app.create_user(
        "viewer@laval.example",
        "correct horse battery staple",
        &["viewer"],
    )
    .await;
    let token = |email: &'static str| {
        let app = &app;
        async move {
            app.login(email, "correct horse battery staple").await["access_token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let auditor = token("auditor@laval.example").await;
    let viewer = token("viewer@laval.example").await;

    let page: Value = app
        .http
        .get(app.api("/audit/events?limit=1000"))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = page["items"].as_array().unwrap();
    assert!(!items.is_empty());
    let me: Value = app.get_as(&auditor, "/auth/me").await.json().await.unwrap();
    for event in items {
        assert_eq!(
            event["metadata"]["agency_id"], me["agency_id"],
            "only the caller's agency"
        );
    }
    assert!(items.iter().all(|e| e["aggregate_id"] != other.as_str()));
    // Another agency's aggregate does not exist for this auditor; the platform admin sees it.
    assert_eq!(verify(&app, &auditor, "agency", &other).await.status(), 404);
    assert_eq!(
        verify(&app, &app.token, "agency", &other).await.status(),
        200
    );
    // Without audit:read: 403.
    let denied = app
        .http
        .request(Method::GET, app.api("/audit/events"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
}

/// Auditors read the whole trail but no secret's hash: the password and client-secret hashes,
/// the sealed TOTP secret and the recovery codes' hashes read `[redacted]`; the stored events,
/// and so the hash chain, stay as they were.
#[tokio::test]
async fn audit_answers_hold_no_secret_hashes() {
    let app = TestApp::spawn().await;
    let password = "correct horse battery staple";
    app.create_user("auditee@laval.example", password, &["viewer"])
        .await;
    let account: Value = app
        .request(Method::POST, "/service-accounts")
        .json(&json!({ "name": "SCADA integration", "roles": ["viewer"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(account["client_secret"].is_string());
    let token = app.access_token("auditee@laval.example", password).await;
    let (_secret, codes) = app.enrol_totp(&token).await;
    assert!(!codes.is_empty());

    let stored: Vec<String> =
        sqlx::query_scalar("SELECT payload::text FROM events WHERE aggregate_type = 'user'")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    let stored = stored.join("\n");
    for secret in ["$argon2id", "MfaEnrolmentStarted", "RecoveryCodesGenerated"] {
        assert!(stored.contains(secret), "the store keeps {secret}");
    }
    trail_complete(&app).await;
    let answer = app
        .request(Method::GET, "/audit/events?aggregate_type=user&limit=1000")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let items: Value = serde_json::from_str(&answer).unwrap();
    let events = items["items"].as_array().unwrap();
    assert!(events.len() >= 6, "{answer}");
    assert!(!answer.contains("$argon2"), "a hash in the audit answer");
    let field = |event_type: &str, field: &str| -> Vec<Value> {
        events
            .iter()
            .filter(|e| e["event_type"] == event_type)
            .map(|e| e["payload"][event_type][field].clone())
            .collect()
    };
    for (event_type, name) in [
        ("UserRegistered", "password_hash"),
        ("MfaEnrolmentStarted", "secret"),
        ("RecoveryCodesGenerated", "hashes"),
    ] {
        let values = field(event_type, name);
        assert!(!values.is_empty(), "{event_type}");
        assert!(
            values.iter().all(|v| v == "[redacted]"),
            "{event_type}.{name}: {values:?}"
        );
    }
    // The chain is untouched: the stored payloads are still what they were.
    let id = events
        .iter()
        .find(|e| e["event_type"] == "RecoveryCodesGenerated")
        .unwrap()["aggregate_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let report: Value = verify(&app, &app.token, "user", &id)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["verified"], true);
}

/// One page of `/audit/events?{query}` as `token`: `(items, next_cursor, has_more)`.
async fn trail(app: &TestApp, token: &str, query: &str) -> (Vec<Value>, Option<String>, bool) {
    let response = app.get_as(token, &format!("/audit/events?{query}")).await;
    assert_eq!(
        response.status(),
        200,
        "{query}: {:?}",
        response.text().await
    );
    let page: Value = response.json().await.unwrap();
    (
        page["items"].as_array().unwrap().clone(),
        page["next_cursor"].as_str().map(str::to_owned),
        page["has_more"].as_bool().unwrap(),
    )
}

/// Waits until the trail shows every stored event: an event shows once every older
/// transaction of the database has ended (a few milliseconds).
async fn trail_complete(app: &TestApp) {
    let stored = app.db.count("SELECT count(*) FROM events").await as usize;
    eriop_tests::wait::until_eq(
        "the whole trail",
        std::time::Duration::from_secs(10),
        stored,
        || async { trail(app, &app.token, "limit=1000").await.0.len() },
    )
    .await;
}

fn request_id(response: &reqwest::Response) -> String {
    response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn auditors_find_events_by_actor_request_type_time_and_aggregate() {
    let app = TestApp::spawn().await;
    let created = app.create_agency("Gatineau").await;
    assert_eq!(created.status(), 201);
    let creation = request_id(&created);
    let agency = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    rename(&app, &agency, &["Gatineau 2", "Gatineau 3"]).await;
    // A second actor: an agency admin who registers a user.
    let password = "correct horse battery staple";
    let second = app
        .create_user("second@laval.example", password, &["agency-admin"])
        .await;
    let token = app.access_token("second@laval.example", password).await;
    let registered = app
        .http
        .post(app.api("/users"))
        .bearer_auth(&token)
        .json(&json!({
            "email": "third@laval.example", "display_name": "Third",
            "password": password, "roles": ["viewer"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    let registration = request_id(&registered);
    trail_complete(&app).await;

    let (by_actor, _, _) = trail(&app, &app.token, &format!("actor={second}&limit=1000")).await;
    assert!(by_actor
        .iter()
        .all(|e| e["metadata"]["actor"] == second.as_str()));
    assert!(
        by_actor.iter().any(|e| e["event_type"] == "UserRegistered"),
        "{by_actor:?}"
    );

    let (by_request, _, _) = trail(&app, &app.token, &format!("request_id={creation}")).await;
    assert_eq!(by_request.len(), 1, "{by_request:?}");
    assert_eq!(by_request[0]["event_type"], "AgencyCreated");
    assert_eq!(by_request[0]["aggregate_id"], agency.as_str());
    let (by_request, _, _) = trail(&app, &app.token, &format!("request_id={registration}")).await;
    assert!(!by_request.is_empty());
    assert!(by_request
        .iter()
        .all(|e| e["metadata"]["request_id"] == registration.as_str()
            && e["metadata"]["actor"] == second.as_str()));

    let (by_type, _, _) = trail(&app, &app.token, "event_type=AgencyRenamed&limit=1000").await;
    assert_eq!(by_type.len(), 2, "{by_type:?}");
    assert!(by_type.iter().all(|e| e["aggregate_id"] == agency.as_str()));

    let stream = format!("aggregate_type=agency&aggregate_id={agency}");
    let (history, _, more) = trail(&app, &app.token, &stream).await;
    assert!(!more);
    let sequences: Vec<i64> = history
        .iter()
        .map(|e| e["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(sequences, [1, 2, 3]);
    // from is inclusive, to exclusive, both on the time the store recorded.
    let second_at = history[1]["recorded_at"].as_str().unwrap();
    let (later, _, _) = trail(&app, &app.token, &format!("{stream}&from={second_at}")).await;
    assert_eq!(
        later
            .iter()
            .map(|e| e["sequence"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [2, 3]
    );
    let (none, _, _) = trail(
        &app,
        &app.token,
        &format!("{stream}&from={second_at}&to={second_at}"),
    )
    .await;
    assert!(none.is_empty(), "an empty range");
    let (earlier, _, _) = trail(&app, &app.token, &format!("{stream}&to={second_at}")).await;
    assert_eq!(
        earlier
            .iter()
            .map(|e| e["sequence"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [1]
    );

    // The second actor's agency admin sees its own agency only: not the agency it did not
    // create, even when asking for it by id.
    let (foreign, _, _) = trail(&app, &token, &stream).await;
    assert!(foreign.is_empty(), "{foreign:?}");

    for bad in [
        "cursor=12",
        "cursor=-1.2",
        "cursor=1.2.3",
        "offset=10",
        "limit=0",
        "from=yesterday",
        "actor=a%00b",
    ] {
        let response = app
            .get_as(&app.token, &format!("/audit/events?{bad}"))
            .await;
        assert!(
            response.status().is_client_error(),
            "{bad}: {}",
            response.status()
        );
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{bad}"
        );
    }
}

/// Paging by cursor while others append never skips an event, not even one whose transaction
/// stored it before others committed and committed after them (the case an ordering by time
/// or by a sequence number taken at insert gets wrong).
#[tokio::test]
async fn paging_by_cursor_misses_no_event_committed_late() {
    let app = TestApp::spawn().await;
    for name in ["Sherbrooke", "Trois-Rivières"] {
        app.created_agency(name).await;
    }
    // A slow writer: its event is stored first and committed last. No projection reads the
    // probe's aggregate type.
    let mut slow = app.db.pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('audit_probe', 'slow', 1, 'ProbeRecorded', '1.0', '{}', $1)",
    )
    .bind(json!({ "agency_id": app.admin_agency, "actor": "test", "request_id": "slow",
                  "command": "Probe", "time": "2026-12-04T00:00:00Z" }))
    .execute(&mut *slow)
    .await
    .unwrap();
    for name in ["Saguenay", "Lévis", "Terrebonne"] {
        app.created_agency(name).await;
    }
    let mut seen: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    let page = |cursor: Option<String>| {
        let app = &app;
        async move {
            let query = match cursor {
                Some(c) => format!("limit=2&cursor={c}"),
                None => "limit=2".to_owned(),
            };
            trail(app, &app.token, &query).await
        }
    };
    loop {
        let (items, next, more) = page(cursor.clone()).await;
        seen.extend(items);
        cursor = next;
        if !more {
            break;
        }
    }
    assert!(seen.iter().all(|e| e["aggregate_type"] != "audit_probe"));
    slow.commit().await.unwrap();
    app.created_agency("Repentigny").await;

    // Follow the cursor until every stored event has been seen (the newest show once no
    // older transaction is still running).
    let stored = app.db.count("SELECT count(*) FROM events").await as usize;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while seen.len() < stored {
        assert!(
            std::time::Instant::now() < deadline,
            "saw {} of {stored} events",
            seen.len()
        );
        let (items, next, _) = page(cursor.clone()).await;
        if items.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        seen.extend(items);
        cursor = next;
    }
    let mut keys: Vec<(String, String, i64)> = seen
        .iter()
        .map(|e| {
            (
                e["aggregate_type"].as_str().unwrap().to_owned(),
                e["aggregate_id"].as_str().unwrap().to_owned(),
                e["sequence"].as_i64().unwrap(),
            )
        })
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), stored, "each stored event once, none twice");
    assert!(keys
        .iter()
        .any(|(t, id, _)| t == "audit_probe" && id == "slow"));
}

/// An auditor replays how an object came to be: each event with the state after it, folded
/// by the domain's own rules, secrets redacted, only in the auditor's agency.
#[tokio::test]
async fn a_stream_replays_each_event_with_the_state_after_it() {
    let app = TestApp::spawn().await;
    let agency = app.created_agency("Rimouski").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.patch_agency(&agency, json!({ "name": "Rimouski 2" }))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.patch_agency(&agency, json!({ "status": "suspended" }))
            .await
            .status(),
        200
    );
    let path = format!("/audit/streams/agency/{agency}");
    let replay: Value = app.get_as(&app.token, &path).await.json().await.unwrap();
    let items = replay["items"].as_array().unwrap();
    let sequences: Vec<i64> = items
        .iter()
        .map(|i| i["event"]["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(sequences, [1, 2, 3]);
    let names: Vec<&str> = items
        .iter()
        .map(|i| i["state"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Rimouski", "Rimouski 2", "Rimouski 2"]);
    assert_eq!(items[2]["event"]["event_type"], "AgencySuspended");
    assert_eq!(items[1]["state"]["status"], items[0]["state"]["status"]);
    assert_ne!(items[2]["state"]["status"], items[1]["state"]["status"]);
    assert_eq!(replay["has_more"], false);
    // The last state is what the agency is now.
    assert_eq!(app.agency(&agency).await["status"], "suspended");

    // A window of the stream: the state is still the one after each event shown.
    let window: Value = app
        .get_as(&app.token, &format!("{path}?from_sequence=2&limit=1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(window["items"].as_array().unwrap().len(), 1);
    assert_eq!(window["items"][0], items[1]);
    assert_eq!(window["has_more"], true);
    assert_eq!(window["next_sequence"], 3);

    // A user's stream: the password hash and the TOTP secret are redacted in every state.
    let password = "correct horse battery staple";
    let user = app
        .create_user("replayed@laval.example", password, &["agency-admin"])
        .await;
    let token = app.access_token("replayed@laval.example", password).await;
    app.enrol_totp(&token).await;
    let answer = app
        .get_as(&app.token, &format!("/audit/streams/user/{user}"))
        .await
        .text()
        .await
        .unwrap();
    let replay: Value = serde_json::from_str(&answer).unwrap();
    let states: Vec<&Value> = replay["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["state"])
        .collect();
    assert!(states.len() >= 3, "{answer}");
    assert!(!answer.contains("$argon2"), "a hash in the replay");
    assert!(states.iter().all(|s| s["password_hash"] == "[redacted]"));
    assert!(
        states
            .iter()
            .any(|s| s["mfa"]["pending_secret"] == "[redacted]"),
        "{answer}"
    );

    // Another agency's auditor: the stream does not exist for it; nor does a made-up type.
    let (_, other) = app
        .admin_of_new_agency("Matane", "auditor@matane.example")
        .await;
    assert_eq!(app.get_as(&other, &path).await.status(), 404);
    for (bad, status) in [
        ("/audit/streams/spaceship/1".to_owned(), 404),
        (format!("{path}?from_sequence=0"), 422),
        (format!("{path}?limit=5000"), 422),
        ("/audit/streams/agency/a%00b".to_owned(), 422),
    ] {
        let response = app.get_as(&app.token, &bad).await;
        assert_eq!(response.status(), status, "{bad}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
}

/// `eriop-audit` as an auditor runs it: `(exit code, stdout, stderr)`.
async fn eriop_audit(args: &[&str]) -> (u8, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let args = std::iter::once("eriop-audit")
        .chain(args.iter().copied())
        .map(str::to_owned);
    let code = eriop_gateway::services::audit_cli::run(args, &mut out, &mut err).await;
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

/// An auditor takes the trail away and checks it alone: every hash the database computed is
/// recomputed offline, the signature holds with the published keys, and an edited line is
/// named.
#[tokio::test]
async fn an_export_verifies_offline_and_an_edited_line_is_named() {
    let app = TestApp::spawn().await;
    let agency = app.created_agency("Chicoutimi").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    rename(&app, &agency, &["Chicoutimi 2", "Chicoutimi 3"]).await;
    let password = "correct horse battery staple";
    app.create_user("exported@laval.example", password, &["viewer"])
        .await;
    let token = app.access_token("exported@laval.example", password).await;
    app.enrol_totp(&token).await;
    trail_complete(&app).await;

    let response = app.get_as(&app.token, "/audit/export").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let export = response.text().await.unwrap();
    assert!(!export.contains("$argon2"), "a secret's hash in the export");
    let dir = std::env::temp_dir().join(format!("eriop-export-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("export.ndjson");
    let keys = dir.join("jwks.json");
    std::fs::write(&file, &export).unwrap();
    let jwks = app
        .http
        .get(format!("{}/.well-known/jwks.json", app.base))
        .send()
        .await
        .unwrap();
    std::fs::write(&keys, jwks.bytes().await.unwrap()).unwrap();
    let (file, keys) = (file.to_str().unwrap(), keys.to_str().unwrap());

    let (code, out, err) = eriop_audit(&["verify", file, "--jwks", keys]).await;
    assert_eq!(code, 0, "{out}{err}");
    let stored = app.db.count("SELECT count(*) FROM events").await;
    assert!(out.contains(&format!("verified: {stored} events")), "{out}");
    assert!(out.contains("signature checked"), "{out}");
    assert!(
        !out.contains(" 0 redacted"),
        "the TOTP enrolment is redacted: {out}"
    );

    // An edited line: the first one changed is named.
    let lines: Vec<&str> = export.lines().collect();
    let renamed = lines
        .iter()
        .position(|l| l.contains("\"Chicoutimi 2\""))
        .unwrap();
    let edited = export.replacen("\"Chicoutimi 2\"", "\"Saint-Forged\"", 1);
    std::fs::write(file, edited).unwrap();
    let (code, _, err) = eriop_audit(&["verify", file, "--jwks", keys]).await;
    assert_eq!(code, 1);
    assert!(err.contains(&format!("line {}:", renamed + 1)), "{err}");
    assert!(err.contains("altered"), "{err}");
    // A removed line.
    let removed: Vec<&str> = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != renamed)
        .map(|(_, l)| *l)
        .collect();
    std::fs::write(file, removed.join("\n") + "\n").unwrap();
    let (code, _, err) = eriop_audit(&["verify", file]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("missing"), "{err}");

    // A time range: chains start mid-way and still verify; another agency's auditor exports
    // its own agency only.
    let first_rename: Value = serde_json::from_str(lines[renamed]).unwrap();
    let from = first_rename["recorded_at"].as_str().unwrap();
    let ranged = app
        .get_as(&app.token, &format!("/audit/export?from={from}"))
        .await
        .text()
        .await
        .unwrap();
    std::fs::write(file, &ranged).unwrap();
    let (code, out, err) = eriop_audit(&["verify", file, "--jwks", keys]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        ranged.lines().nth(1).unwrap().contains("\"Chicoutimi 2\""),
        "{ranged}"
    );
    let (other, other_token) = app
        .admin_of_new_agency("Alma", "auditor@alma.example")
        .await;
    let theirs = app
        .get_as(&other_token, "/audit/export")
        .await
        .text()
        .await
        .unwrap();
    let header: Value = serde_json::from_str(theirs.lines().next().unwrap()).unwrap();
    assert_eq!(header["agency_id"], other.as_str());
    assert!(
        !theirs.contains(&agency),
        "another agency's events in an agency's export"
    );
    std::fs::write(file, &theirs).unwrap();
    assert_eq!(eriop_audit(&["verify", file, "--jwks", keys]).await.0, 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A writer the test reads while `eriop-audit tail` writes to it.
#[derive(Clone, Default)]
struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

fn lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// NATS subscribers replay `EVENTS` from the start, a sequence or a time, one JSON line per
/// event, and follow it live.
#[tokio::test]
async fn eriop_audit_replays_and_tails_the_events_stream() {
    use eriop_tests::app::NatsUrlForTests;
    let app = TestApp::spawn().await;
    let first = app.created_agency("Baie-Comeau").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = app.created_agency("Sept-Îles").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let stored = app.db.count("SELECT count(*) FROM events").await as usize;
    eriop_tests::wait::until_eq(
        "the relay publishes every event",
        std::time::Duration::from_secs(10),
        stored,
        || async { app.events_on_stream().await.len() },
    )
    .await;
    let url = app.settings.nats_url_for_tests();
    let prefix = app.settings.nats_prefix.clone();
    let base = ["--nats-url", url.as_str(), "--prefix", prefix.as_str()];
    let replay = |extra: &'static [&'static str]| {
        let mut args = vec!["replay"];
        args.extend(base);
        args.extend(extra);
        async move { eriop_audit(&args).await }
    };

    let (code, out, err) = replay(&[]).await;
    assert_eq!(code, 0, "{err}");
    let all = lines(&out);
    assert_eq!(all.len(), stored, "{out}");
    let sequences: Vec<u64> = all
        .iter()
        .map(|l| l["stream_sequence"].as_u64().unwrap())
        .collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
    assert!(all
        .iter()
        .any(|l| l["event"]["aggregate_id"] == first.as_str()
            && l["event"]["event_type"] == "AgencyCreated"
            && l["subject"]
                .as_str()
                .unwrap()
                .ends_with(&format!("events.agency.{first}"))));

    // Hostile bytes on the stream (not JSON, CR/LF, NUL): skipped with a word, the rest flows.
    let js = app.jetstream().await;
    js.publish(
        app.topology.event_subject("agency", "hostile"),
        b"not json\r\n\0\xff".to_vec().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let (code, out, err) = replay(&[]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(lines(&out).len(), stored, "{out}");
    assert!(err.contains("is not JSON; skipped"), "{err}");

    // From a sequence; one aggregate type; from a time.
    let (_, out, _) = replay(&["--from-sequence", "3"]).await;
    assert_eq!(lines(&out)[0]["stream_sequence"], 3);
    assert_eq!(lines(&out).len(), stored - 2);
    let (_, out, _) = replay(&["--aggregate-type", "agency"]).await;
    let agencies = lines(&out);
    assert!(agencies
        .iter()
        .all(|l| l["event"]["aggregate_type"] == "agency"));
    assert!(agencies.len() >= 2 && agencies.len() < stored, "{out}");
    let created = all
        .iter()
        .find(|l| l["event"]["aggregate_id"] == second.as_str())
        .unwrap()["event"]["recorded_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut args = vec!["replay", "--since"];
    args.push(&created);
    args.extend(base);
    let (_, out, _) = eriop_audit(&args).await;
    let since = lines(&out);
    assert!(!since.is_empty() && since.len() < stored);
    assert!(
        since
            .iter()
            .all(|l| l["event"]["aggregate_id"] != first.as_str()),
        "{out}"
    );

    // Tail: from now on, live.
    let out = Shared::default();
    let tail = {
        let mut out = out.clone();
        let args: Vec<String> = ["eriop-audit", "tail"]
            .into_iter()
            .chain(base)
            .map(str::to_owned)
            .collect();
        tokio::spawn(async move {
            let mut err = Vec::new();
            eriop_gateway::services::audit_cli::run(args, &mut out, &mut err).await
        })
    };
    // The tail starts at "now": create agencies until one shows (the first may come before
    // its consumer exists).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut created = Vec::new();
    let shown = |created: &[String]| created.iter().any(|id| out.text().contains(id.as_str()));
    let live = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "tail showed nothing: {}",
            out.text()
        );
        created.push(
            app.created_agency("Gaspé").await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        let wait = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while std::time::Instant::now() < wait && !shown(&created) {
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        if shown(&created) {
            break lines(&out.text());
        }
    };
    assert!(
        live.iter()
            .all(|l| l["event"]["aggregate_id"] != first.as_str()),
        "a tail starts now"
    );
    assert!(!tail.is_finished(), "tail follows until stopped");
    tail.abort();
}

/// Erasure (crypto-shredding): the person's key is deleted, every read shows `[erased]`
/// where their data was, the export holds none of it, and the chain still verifies.
#[tokio::test]
async fn an_erased_person_reads_erased_everywhere_and_the_chain_still_verifies() {
    let app = TestApp::spawn().await;
    let password = "correct horse battery staple";
    let person = app
        .create_user("forget.me@laval.example", password, &["viewer"])
        .await;
    let token = app.access_token("forget.me@laval.example", password).await;
    assert_eq!(
        app.request(Method::PATCH, &format!("/users/{person}"))
            .json(&json!({ "display_name": "Forget Me" }))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let erase = app
        .request(Method::POST, &format!("/users/{person}/erase"))
        .send()
        .await
        .unwrap();
    assert_eq!(erase.status(), 204, "{:?}", erase.text().await);

    // Recorded, by the administrator.
    let erasures: Vec<Value> = sqlx::query_scalar(
        "SELECT metadata FROM events WHERE aggregate_id = $1 AND event_type = 'PersonalDataErased'",
    )
    .bind(&person)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(erasures.len(), 1);
    assert_eq!(erasures[0]["actor"], app.admin_id.as_str());
    // The key and the address's blind index are gone; the person's sessions and logins too.
    let of = |table: &str| format!("SELECT count(*) FROM {table} WHERE user_id = '{person}'");
    assert_eq!(app.db.count(&of("user_data_keys")).await, 0);
    assert_eq!(app.db.count(&of("user_emails")).await, 0);
    assert_eq!(app.get_as(&token, "/auth/me").await.status(), 401);
    assert_eq!(
        app.try_login("forget.me@laval.example", password)
            .await
            .status(),
        401
    );

    // Reads: the users list, the user, the trail, the replay.
    let users: Value = app
        .request(Method::GET, "/users?limit=1000")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let row = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == person.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["email"], "[erased]");
    assert_eq!(row["display_name"], "[erased]");
    assert_eq!(row["status"], "erased");
    let user: Value = app
        .request(Method::GET, &format!("/users/{person}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(user["status"], "erased");
    trail_complete(&app).await;
    let (events, _, _) = trail(
        &app,
        &app.token,
        &format!("aggregate_type=user&aggregate_id={person}&limit=1000"),
    )
    .await;
    let registered = events
        .iter()
        .find(|e| e["event_type"] == "UserRegistered")
        .unwrap();
    assert_eq!(registered["payload"]["UserRegistered"]["email"], "[erased]");
    assert_eq!(
        registered["payload"]["UserRegistered"]["display_name"],
        "[erased]"
    );
    let renamed = events
        .iter()
        .find(|e| e["event_type"] == "ProfileUpdated")
        .unwrap();
    assert_eq!(
        renamed["payload"]["ProfileUpdated"]["display_name"],
        "[erased]"
    );
    let replay: Value = app
        .get_as(&app.token, &format!("/audit/streams/user/{person}"))
        .await
        .json()
        .await
        .unwrap();
    assert!(replay["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["state"]["email"] == "[erased]" || i["state"]["email"].is_null()));

    // The export holds none of the person's sealed data, and verifies.
    let sealed: Vec<String> = sqlx::query_scalar(
        "SELECT payload -> 'UserRegistered' ->> 'email' FROM events WHERE aggregate_id = $1 AND sequence = 1",
    )
    .bind(&person)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    let export = app
        .get_as(&app.token, "/audit/export")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !export.contains(&sealed[0]),
        "the sealed email left in an export"
    );
    let file = std::env::temp_dir().join(format!("eriop-erased-{}.ndjson", uuid::Uuid::now_v7()));
    std::fs::write(&file, &export).unwrap();
    let (code, out, err) = eriop_audit(&["verify", file.to_str().unwrap()]).await;
    std::fs::remove_file(&file).unwrap();
    assert_eq!(code, 0, "{out}{err}");
    // The chain, recomputed in the database, is whole.
    let report: Value = verify(&app, &app.token, "user", &person)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["verified"], true);

    // Erasing again records nothing new; the account cannot come back; nor can one erase
    // oneself.
    let again = app
        .request(Method::POST, &format!("/users/{person}/erase"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 204);
    assert_eq!(
        app.db.count(&format!("SELECT count(*) FROM events WHERE aggregate_id = '{person}' AND event_type = 'PersonalDataErased'")).await,
        1
    );
    let back = app
        .request(Method::POST, &format!("/users/{person}/reactivate"))
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), 409);
    let myself = app
        .request(Method::POST, &format!("/users/{}/erase", app.admin_id))
        .send()
        .await
        .unwrap();
    assert_eq!(myself.status(), 409);
}
