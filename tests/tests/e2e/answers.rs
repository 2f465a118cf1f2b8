//! Answers kept for a moment (issue 13, `gateway/src/http/answers.rs`): a hot read may be
//! answered from the same agency's answer to the same request, but never another agency's,
//! never past the checks of the request itself, and never after a command changed what it
//! shows. The bound here is ten minutes, so only those rules can end a kept answer.

use std::time::Duration;

use eriop_tests::app::NatsUrlForTests;
use eriop_tests::{wait, TestApp, TestDb};
use reqwest::Method;
use serde_json::{json, Value};

use crate::devices::{create_class, register};

async fn name_of(app: &TestApp, token: &str, device: &str) -> String {
    let answer = app.get_as(token, &format!("/devices/{device}")).await;
    assert_eq!(answer.status(), 200);
    let device: Value = answer.json().await.unwrap();
    device["name"].as_str().unwrap().to_owned()
}

async fn list_names(app: &TestApp, token: &str) -> Vec<String> {
    let answer = app.get_as(token, "/devices").await;
    assert_eq!(answer.status(), 200);
    let page: Value = answer.json().await.unwrap();
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_kept_answer_is_its_agencys_own_and_ends_with_any_change_a_command_makes() {
    let app = TestApp::spawn_with(TestDb::migrated().await, |s| {
        s.read_cache_ms = 600_000;
    })
    .await;
    let class = create_class(&app, 300).await;
    let device = register(&app, &class, "kept-1", "A1").await;
    let rename_behind_the_back = |name: String| {
        let pool = app.db.pool.clone();
        let device = device.clone();
        async move {
            sqlx::query("UPDATE devices SET name = $1 WHERE id = $2::uuid")
                .bind(name)
                .bind(device)
                .execute(&pool)
                .await
                .unwrap();
        }
    };
    // Another agency, with an administrator of its own.
    let (_, other) = app
        .admin_of_new_agency("Ville Voisine", "voisine@voisine.example")
        .await;

    // Kept once the gateway follows the hints (and the hints of the commands above have
    // come): a read, a change the projections never announce (written behind their back),
    // and the same read answers as before. In between, the other agency asks the same
    // paths, and gets its own answers, never the kept ones.
    let mut tries = 0;
    wait::until("an answer kept", Duration::from_secs(10), || {
        tries += 1;
        let (app, rename, other) = (&app, &rename_behind_the_back, &other);
        let device = device.clone();
        async move {
            let before = name_of(app, &app.token, &device).await;
            assert_eq!(list_names(app, &app.token).await.len(), 1);
            rename(format!("Unannounced {tries}")).await;
            assert!(list_names(app, other).await.is_empty());
            let theirs = app.get_as(other, &format!("/devices/{device}")).await;
            assert_eq!(theirs.status(), 404);
            let after = name_of(app, &app.token, &device).await;
            let listed = list_names(app, &app.token).await;
            (after == before && listed == vec![before.clone()]).then_some(())
        }
    })
    .await;

    // Operators see answers kept.
    let metrics = crate::metrics::scrape(&app, &app.base).await;
    let kept = crate::metrics::sample(
        &metrics,
        "eriop_gateway_hot_read_answers_total",
        r#"from="kept""#,
    );
    assert!(kept.is_some_and(|n| n >= 2.0), "{metrics}");

    // A command's change is shown by the next read: this gateway forgot what it kept
    // before answering the command.
    let renamed = app
        .request(Method::PATCH, &format!("/devices/{device}"))
        .json(&json!({ "name": "Pole renamed" }))
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status(), 200, "{:?}", renamed.text().await);
    assert_eq!(name_of(&app, &app.token, &device).await, "Pole renamed");
    assert_eq!(list_names(&app, &app.token).await, vec!["Pole renamed"]);

    // A hint of a change an answer may show (as a command made through another gateway
    // sends) ends what is kept.
    rename_behind_the_back("Unannounced again".into()).await;
    assert_eq!(name_of(&app, &app.token, &device).await, "Pole renamed");
    let nats = async_nats::connect(app.settings.nats_url_for_tests())
        .await
        .unwrap();
    let hint = app
        .topology
        .projected_subject("device_class", &uuid::Uuid::now_v7().to_string());
    nats.publish(hint, "1".into()).await.unwrap();
    nats.flush().await.unwrap();
    wait::until_eq(
        "the hint seen",
        Duration::from_secs(10),
        "Unannounced again".to_owned(),
        || name_of(&app, &app.token, &device),
    )
    .await;

    // The request's own checks come first: a revoked token gets no kept answer.
    assert!(list_names(&app, &other).await.is_empty());
    let out = app
        .http
        .post(app.api("/auth/logout"))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    assert_eq!(app.get_as(&other, "/devices").await.status(), 401);
}
