//! Rebuilding the projections from the event store gives the same rows.

use eriop_tests::TestApp;
use serde_json::json;

async fn rows(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT row_to_json(a)::text FROM agencies a
         UNION ALL SELECT row_to_json(u)::text FROM users u
         UNION ALL SELECT row_to_json(c)::text FROM device_classes c
         UNION ALL SELECT row_to_json(d)::text FROM devices d
         UNION ALL SELECT row_to_json(k)::text FROM device_commands k
         UNION ALL SELECT row_to_json(r)::text FROM registries r
         ORDER BY 1",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn rebuild_gives_the_same_rows() {
    let app = TestApp::spawn().await;
    for n in 0..7 {
        let agency = app.created_agency(&format!("Agency {n}")).await;
        if n % 2 == 0 {
            let id = agency["id"].as_str().unwrap();
            let response = app
                .patch_agency(
                    id,
                    json!({ "name": format!("Agency {n} renamed"), "status": "suspended" }),
                )
                .await;
            assert_eq!(response.status(), 200);
        }
    }
    app.create_user(
        "rebuilt@laval.example",
        "correct horse battery staple",
        &["viewer"],
    )
    .await;
    app.login("rebuilt@laval.example", "correct horse battery staple")
        .await;
    // A device class, a device changed once, and a command to it.
    let class: serde_json::Value = app
        .request(reqwest::Method::POST, "/device-classes")
        .json(&json!({"name": "Light", "functions": [{"id": "basic", "type": "BasicFunction"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    app.own_registry("r").await;
    let device: serde_json::Value = app
        .request(reqwest::Method::POST, "/devices")
        .json(&json!({"class_id": class["id"], "registry": "r", "serial": "s", "name": "Pole"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let device = device["id"].as_str().unwrap();
    let patched = app
        .request(reqwest::Method::PATCH, &format!("/devices/{device}"))
        .json(&json!({"offline_after_secs": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let command = app
        .request(
            reqwest::Method::POST,
            &format!("/devices/{device}/commands"),
        )
        .json(&json!({"type": "fundamentum", "name": "reboot"}))
        .send()
        .await
        .unwrap();
    assert_eq!(command.status(), 202);
    // Logins do not wait for the read model: let it catch up before comparing.
    let user_events = app
        .db
        .count("SELECT count(*) FROM events WHERE aggregate_type = 'user'")
        .await;
    eriop_tests::wait::until_eq(
        "the users read model to catch up",
        std::time::Duration::from_secs(30),
        user_events,
        || async {
            app.db
                .count("SELECT coalesce(sum(version), 0)::bigint FROM users")
                .await
        },
    )
    .await;
    let before = rows(&app).await;
    // 8 agencies (the platform one too), 2 users (the admin too), a class, a device, a
    // command, a registry.
    assert_eq!(before.len(), 8 + 2 + 4);
    let events = app
        .db
        .count("SELECT count(*) FROM events WHERE aggregate_type IN ('agency', 'user', 'device_class', 'device', 'registry')")
        .await as u64;

    // A damaged read model (someone edited it by hand) is repaired too.
    sqlx::query("UPDATE agencies SET name = 'tampered' WHERE name = 'Agency 1'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM users WHERE roles = '{viewer}'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE device_commands SET status = 'success'")
        .execute(&app.db.pool)
        .await
        .unwrap();

    // As the services' unprivileged role (what `eriop-projections rebuild` logs in as in a
    // deployment), not the tests' database owner.
    let pool = {
        use secrecy::ExposeSecret;
        eriop_nats::db::lazy_pool(
            app.settings.database_url.expose_secret(),
            "eriop_app",
            2,
            std::time::Duration::from_secs(5),
        )
        .unwrap()
    };
    let mut progress = Vec::new();
    let report = eriop_projections::rebuild::rebuild(
        &pool,
        &eriop_projections::ReadModel::ALL,
        |done, total| progress.push((done, total)),
    )
    .await
    .unwrap();
    assert_eq!(report.events, events);
    assert_eq!(report.applied, report.events);
    assert_eq!(progress.last(), Some(&(events, events)));
    assert_eq!(rows(&app).await, before);
}

/// A rebuild while the platform runs: readers go on reading, and never see the read model
/// empty or partly rebuilt; at its commit the rebuilt rows replace the old ones at once.
#[tokio::test]
async fn readers_see_the_whole_read_model_throughout_a_rebuild() {
    use std::time::Instant;

    let app = TestApp::spawn().await;
    // Enough history that the rebuild takes a while: 300 agencies of 10 events each, written
    // straight into the store (the relay's trigger off: no need to publish them), then a
    // first rebuild to show them.
    let metadata: serde_json::Value = sqlx::query_scalar(
        "SELECT metadata - 'previous_hash' FROM events WHERE aggregate_type = 'agency' LIMIT 1",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    sqlx::query("ALTER TABLE events DISABLE TRIGGER events_relay_enqueue")
        .execute(&app.db.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'agency', a.id::text, s.n,
                CASE WHEN s.n = 1 THEN 'AgencyCreated' ELSE 'AgencyRenamed' END, '1.0',
                CASE WHEN s.n = 1
                     THEN jsonb_build_object('AgencyCreated', jsonb_build_object('id', a.id, 'name', 'Rebuilt ' || a.i))
                     ELSE jsonb_build_object('AgencyRenamed', jsonb_build_object('name', 'Rebuilt ' || a.i || ' v' || s.n))
                END, $1
           FROM (SELECT i, gen_random_uuid() AS id FROM generate_series(1, 300) i) a,
                generate_series(1, 10) s(n)
          ORDER BY a.i, s.n",
    )
    .bind(&metadata)
    .execute(&app.db.pool)
    .await
    .unwrap();
    sqlx::query("ALTER TABLE events ENABLE TRIGGER events_relay_enqueue")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let agencies = [eriop_projections::ReadModel::Agencies];
    eriop_projections::rebuild::rebuild(&app.db.pool, &agencies, |_, _| {})
        .await
        .unwrap();
    let expected = app.db.count("SELECT count(*) FROM agencies").await as usize;
    assert!(expected > 300);

    // Readers, as clients: the platform admin lists the agencies again and again.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (http, url, token, stop) = (
                app.http.clone(),
                app.api("/agencies?limit=1000"),
                app.token.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let started = Instant::now();
                    let page: serde_json::Value = http
                        .get(&url)
                        .bearer_auth(&token)
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    seen.push((
                        started,
                        Instant::now(),
                        page["items"].as_array().unwrap().len(),
                    ));
                }
                seen
            })
        })
        .collect();
    let started = Instant::now();
    // A write while the rebuild runs: the live projection applies it, and the rebuilt read
    // model keeps it.
    let (report, written) = tokio::join!(
        eriop_projections::rebuild::rebuild(&app.db.pool, &agencies, |_, _| {}),
        async {
            app.created_agency("Written during the rebuild").await["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    );
    let report = report.unwrap();
    let ended = Instant::now();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(report.events >= 3_000);
    let mut during = 0;
    for reader in readers {
        let mut last = 0;
        for (from, to, count) in reader.await.unwrap() {
            assert!(
                count == expected || count == expected + 1,
                "a reader saw {count} agencies (expected {expected}, or one more once written)"
            );
            assert!(count >= last, "a reader saw the written agency disappear");
            last = count;
            if from > started && to < ended {
                during += 1;
            }
        }
    }
    assert_eq!(
        app.agency(&written).await["name"],
        "Written during the rebuild"
    );
    assert_eq!(
        app.db.count("SELECT count(*) FROM agencies").await as usize,
        expected + 1
    );
    // Readers were served while the rebuild ran (a lock that kept them out would leave none).
    assert!(
        during >= 2,
        "{during} reads answered during a rebuild of {:?}",
        ended - started
    );
}
