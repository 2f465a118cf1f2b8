//! The bridge's device registry (issue 13): a group's devices are looked up in one query, and
//! the answers keep the trust rules of a lookup one by one (DESIGN.md rule 7).

use std::time::Duration;

use eriop_bridge::registry::Registry;
use uuid::Uuid;

/// A registry `name` of `agency`, and a device `serial` of `owner` in it.
async fn device(
    db: &eriop_tests::TestDb,
    (agency, name): (Uuid, &str),
    owner: Uuid,
    serial: &str,
    decommissioned: bool,
) -> Uuid {
    sqlx::query(
        "INSERT INTO registries (registry, id, agency_id, assigned_at, version)
         VALUES ($1, $2, $3, now(), 1) ON CONFLICT (registry) DO NOTHING",
    )
    .bind(name)
    .bind(Uuid::now_v7())
    .bind(agency)
    .execute(&db.pool)
    .await
    .unwrap();
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO devices (id, agency_id, class_id, registry, serial, name, functions,
                              decommissioned, created_at, updated_at, version)
         VALUES ($1, $2, $3, $4, $5, 'Pole', '[]', $6, now(), now(), 1)",
    )
    .bind(id)
    .bind(owner)
    .bind(Uuid::now_v7())
    .bind(name)
    .bind(serial)
    .bind(decommissioned)
    .execute(&db.pool)
    .await
    .unwrap();
    id
}

fn key(registry: &str, serial: &str) -> (String, String) {
    (registry.to_owned(), serial.to_owned())
}

#[tokio::test]
async fn a_groups_devices_are_found_in_one_query_with_the_same_trust_rules() {
    let db = eriop_tests::TestDb::migrated().await;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let first = device(&db, (a, "city-a"), a, "pole-1", false).await;
    let second = device(&db, (a, "city-a"), a, "pole-2", false).await;
    device(&db, (a, "city-a"), a, "retired", true).await;
    // A device row of agency b in agency a's registry: it does not count (rule 7).
    device(&db, (a, "city-a"), b, "planted", false).await;

    let mut registry = Registry::new(db.pool.clone(), Duration::from_secs(30));
    registry
        .prefetch([
            key("city-a", "pole-1"),
            key("city-a", "pole-2"),
            key("city-a", "pole-1"),
            key("city-a", "retired"),
            key("city-a", "planted"),
            key("city-a", "nobody"),
        ])
        .await
        .unwrap();
    // Every answer below comes without the database: it is closed.
    db.pool.close().await;
    let found = registry.lookup("city-a", "pole-1").await.unwrap().unwrap();
    assert_eq!((found.id, found.agency_id), (first, a));
    let found = registry.lookup("city-a", "pole-2").await.unwrap().unwrap();
    assert_eq!((found.id, found.agency_id), (second, a));
    for refused in ["retired", "planted", "nobody"] {
        assert!(
            registry.lookup("city-a", refused).await.unwrap().is_none(),
            "{refused}"
        );
    }
    // A device the prefetch did not name is asked for (and the closed database says so).
    assert!(registry.lookup("city-a", "pole-3").await.is_err());
    // The next group asks again for what was stale or unknown.
    assert!(registry.prefetch([key("city-a", "nobody")]).await.is_err());
    assert!(
        registry.prefetch([key("city-a", "pole-1")]).await.is_ok(),
        "pole-1 is cached"
    );
}

#[tokio::test]
async fn an_unknown_device_is_found_by_the_next_group_once_registered() {
    let db = eriop_tests::TestDb::migrated().await;
    let a = Uuid::now_v7();
    let mut registry = Registry::new(db.pool.clone(), Duration::from_secs(30));
    registry.prefetch([key("city-a", "new")]).await.unwrap();
    assert!(registry.lookup("city-a", "new").await.unwrap().is_none());
    let id = device(&db, (a, "city-a"), a, "new", false).await;
    registry.prefetch([key("city-a", "new")]).await.unwrap();
    assert_eq!(
        registry.lookup("city-a", "new").await.unwrap().unwrap().id,
        id
    );
}
