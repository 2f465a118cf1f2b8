//! Rebuilding the projections from the event store gives the same rows.

use eriop_tests::TestApp;
use serde_json::json;

async fn rows(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar("SELECT row_to_json(a)::text FROM agencies a ORDER BY id")
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
    let before = rows(&app).await;
    assert_eq!(before.len(), 7 + 1, "and the platform agency");

    // A damaged read model (someone edited it by hand) is repaired too.
    sqlx::query("UPDATE agencies SET name = 'tampered' WHERE name = 'Agency 1'")
        .execute(&app.db.pool)
        .await
        .unwrap();

    let mut progress = Vec::new();
    let report = eriop_projections::rebuild::rebuild(&app.db.pool, |done, total| {
        progress.push((done, total))
    })
    .await
    .unwrap();
    assert_eq!(report.events, 1 + 7 + 4 * 2);
    assert_eq!(report.applied, report.events);
    assert_eq!(progress.last(), Some(&(16, 16)));
    assert_eq!(rows(&app).await, before);
}
