//! Migrations up, down, up: the same schema. The telemetry table is a partitioned table on
//! plain PostgreSQL and a hypertable on TimescaleDB.

use std::process::Command;

use eriop_tests::TestDb;
use sqlx::postgres::PgPoolOptions;
use sqlx::Executor;

fn schema(db: &TestDb) -> String {
    let out = Command::new("pg_dump")
        .args(["--schema-only", "--no-owner", "--no-privileges", &db.url])
        .output()
        .expect("pg_dump (postgresql-client) is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        // pg_dump 15.14+ guards its output with a random key per run.
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn up_down_up_gives_the_same_schema() {
    let db = TestDb::empty().await;
    eriop_migrations::up(&db.pool).await.unwrap();
    let first = schema(&db);
    assert!(first.contains("CREATE TABLE public.events"));
    assert!(first.contains("CREATE TABLE public.agencies"));

    eriop_migrations::down(&db.pool, 0).await.unwrap();
    assert_eq!(
        eriop_migrations::applied(&db.pool).await.unwrap(),
        Vec::<i64>::new()
    );
    let ours: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public' AND c.relname NOT LIKE '\\_sqlx\\_migrations%'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(ours, 0, "down to zero leaves nothing of ours");

    eriop_migrations::up(&db.pool).await.unwrap();
    assert_eq!(schema(&db), first);

    // Reverting to a target keeps what is below it.
    eriop_migrations::down(&db.pool, 2).await.unwrap();
    assert_eq!(
        eriop_migrations::applied(&db.pool).await.unwrap(),
        vec![1, 2]
    );
}

#[tokio::test]
async fn telemetry_is_range_partitioned_on_plain_postgresql() {
    let db = TestDb::migrated().await;
    let kind: i8 =
        sqlx::query_scalar("SELECT relkind::\"char\" FROM pg_class WHERE relname = 'telemetry'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(kind as u8, b'p', "a partitioned table");
    let today: i64 = db
        .count("SELECT count(*) FROM pg_class WHERE relname = 'telemetry_' || to_char(current_date, 'YYYYMMDD')")
        .await;
    assert_eq!(today, 1, "today's partition exists ahead of time");

    // A sample of today and one from far in the future both land: no insert fails for want
    // of a partition. The natural key keeps a redelivered sample from landing twice. (Today
    // is the start of the day, not `now()`: two statements a second apart made two keys.)
    for time in ["current_date", "'2199-01-01T00:00:00Z'", "current_date"] {
        sqlx::query(&format!(
            "INSERT INTO telemetry (time, agency_id, device_id, function_id, attribute, value_double)
             VALUES (date_trunc('second', {time}::timestamptz), '00000000-0000-0000-0000-000000000001',
                     '00000000-0000-0000-0000-000000000002', 'lamp', 'level', 42)
             ON CONFLICT ON CONSTRAINT telemetry_natural_key DO NOTHING"
        ))
        .execute(&db.pool)
        .await
        .unwrap();
    }
    assert_eq!(db.count("SELECT count(*) FROM telemetry").await, 2);
    assert_eq!(
        db.count("SELECT count(*) FROM ONLY telemetry_default")
            .await,
        1
    );
    let created: i32 =
        sqlx::query_scalar("SELECT eriop_ensure_telemetry_partitions(current_date, 30)")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        created,
        30 - 15,
        "extends ahead without touching existing partitions"
    );
}

pub fn timescale_url() -> String {
    if let Ok(url) = std::env::var("ERIOP_TEST_TIMESCALE_URL") {
        return url;
    }
    // Not started by `make test`: start it here.
    let start = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/timescaledb/start.sh"
    );
    let out = Command::new("bash")
        .args([start, "55432"])
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "TimescaleDB on loopback: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn telemetry_is_a_hypertable_with_policies_on_timescaledb() {
    // One connection at a time: the loopback TimescaleDB serves one client.
    // It is also one session for every client: statements prepared by an earlier
    // connection are still there, and sqlx would name its own the same.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("DEALLOCATE ALL").await?;
                Ok(())
            })
        })
        .connect(&timescale_url())
        .await
        .expect("TimescaleDB on loopback (../shared/timescaledb/start.sh) answers");
    eriop_migrations::down(&pool, 0).await.unwrap();
    eriop_migrations::up(&pool).await.unwrap();

    let hypertables: Vec<String> =
        sqlx::query_scalar("SELECT hypertable_name::text FROM timescaledb_information.hypertables")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(hypertables, vec!["telemetry".to_owned()]);
    let mut jobs: Vec<String> = sqlx::query_scalar(
        "SELECT proc_name::text FROM timescaledb_information.jobs WHERE hypertable_name = 'telemetry'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    jobs.sort();
    assert_eq!(jobs, ["policy_compression", "policy_retention"]);
    let bucketed: i64 = sqlx::query_scalar(
        "WITH s AS (INSERT INTO telemetry (time, agency_id, device_id, function_id, attribute, value_double)
                    VALUES ('2026-01-01T00:00:10Z', gen_random_uuid(), gen_random_uuid(), 'lamp', 'level', 1)
                    RETURNING time)
         SELECT count(*) FROM (SELECT time_bucket(INTERVAL '1 hour', time) FROM s) b",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(bucketed, 1);

    // Reversible there too.
    eriop_migrations::down(&pool, 0).await.unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM timescaledb_information.hypertables")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    eriop_migrations::up(&pool).await.unwrap();
}

/// The migrations older than `version`: a database brought to just before it.
fn migrator_before(version: i64) -> sqlx::migrate::Migrator {
    sqlx::migrate::Migrator {
        migrations: std::borrow::Cow::Owned(
            eriop_migrations::MIGRATOR
                .migrations
                .iter()
                .filter(|m| m.version < version)
                .cloned()
                .collect(),
        ),
        ..sqlx::migrate::Migrator::DEFAULT
    }
}

/// On a fresh PostgreSQL cluster (no `eriop_app` role yet), several databases migrated at
/// once all succeed: the cluster-wide role is created once, whoever comes first. Each round
/// brings eight databases to just before migration 0008 (the one that needs the role), then
/// migrates them all at once, so that they reach it together; then drops them and the role.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn databases_migrated_at_once_on_a_fresh_cluster_all_succeed() {
    let cluster = eriop_tests::postgres::PrivatePostgres::start();
    let admin = PgPoolOptions::new()
        .connect(&cluster.url("postgres"))
        .await
        .unwrap();
    let has_role = || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'eriop_app')",
        )
        .fetch_one(&admin)
        .await
        .unwrap()
    };
    for round in 0..5 {
        assert!(!has_role().await, "round {round} starts without eriop_app");
        let mut pools = Vec::new();
        for n in 0..8 {
            admin
                .execute(format!("CREATE DATABASE migrate_{n}").as_str())
                .await
                .unwrap();
            let pool = PgPoolOptions::new()
                .connect(&cluster.url(&format!("migrate_{n}")))
                .await
                .unwrap();
            migrator_before(8).run(&pool).await.unwrap();
            pools.push(pool);
        }
        let results = futures::future::join_all(pools.iter().map(eriop_migrations::up)).await;
        for (n, result) in results.into_iter().enumerate() {
            assert!(result.is_ok(), "round {round}, database {n}: {result:?}");
        }
        assert!(has_role().await);
        for (n, pool) in pools.into_iter().enumerate() {
            pool.close().await;
            admin
                .execute(format!("DROP DATABASE migrate_{n} WITH (FORCE)").as_str())
                .await
                .unwrap();
        }
        admin.execute("DROP ROLE eriop_app").await.unwrap();
    }
}

/// Migration 0013 gives each registry in use to the agency of its devices, as an event of
/// the audit trail and as a row of the read model, and says nothing of decommissioned ones.
#[tokio::test]
async fn migration_0013_assigns_the_registries_of_existing_devices_to_their_agencies() {
    let db = TestDb::empty().await;
    migrator_before(13).run(&db.pool).await.unwrap();
    let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    for (agency, registry, serial, decommissioned) in [
        (a, "reg-a", "1", false),
        (a, "reg-a", "2", false),
        (b, "reg-b", "1", false),
        (b, "reg-gone", "1", true),
    ] {
        sqlx::query(
            "INSERT INTO devices (id, agency_id, class_id, registry, serial, name, functions,
                                  decommissioned, created_at, updated_at, version)
             VALUES ($1, $2, $3, $4, $5, 'Pole', '[]', $6, now(), now(), 1)",
        )
        .bind(uuid::Uuid::now_v7())
        .bind(agency)
        .bind(uuid::Uuid::now_v7())
        .bind(registry)
        .bind(serial)
        .bind(decommissioned)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    eriop_migrations::up(&db.pool).await.unwrap();
    let rows: Vec<(String, Option<uuid::Uuid>, i64)> =
        sqlx::query_as("SELECT registry, agency_id, version FROM registries ORDER BY registry")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![("reg-a".into(), Some(a), 1), ("reg-b".into(), Some(b), 1)]
    );
    let events: Vec<(String, String, serde_json::Value)> = sqlx::query_as(
        "SELECT e.aggregate_id, e.metadata ->> 'actor', e.payload FROM events e
           JOIN registry_ids r ON r.id::text = e.aggregate_id
          WHERE e.aggregate_type = 'registry' ORDER BY r.registry",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].1, "migration:0013_registries");
    assert_eq!(
        events[0].2,
        serde_json::json!({"RegistryAssigned": {"registry": "reg-a", "agency_id": a}})
    );
    // The stored event decodes as the domain's own.
    let _: eriop_domain::device::RegistryEvent =
        serde_json::from_value(events[1].2.clone()).unwrap();
    // And the hash chain covers it: the relay has it queued for EVENTS.
    let queued: i64 =
        sqlx::query_scalar("SELECT count(*) FROM relay_pending WHERE aggregate_type = 'registry'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(queued, 2);
}

/// Samples stored before the ingest wrote each key's latest value (migration 0012) get one
/// from migration 0033, so the retention job, which goes key by key from `device_latest`
/// (0032), deletes them when they are past their agency's retention. A key that has its
/// row keeps it.
#[tokio::test]
async fn migration_0033_gives_every_stored_key_its_latest_value_so_retention_reaches_it() {
    let db = TestDb::empty().await;
    migrator_before(33).run(&db.pool).await.unwrap();
    let (agency, old_light, new_light) = (
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
    );
    for (device, day, value) in [
        (old_light, "2026-01-01", 1.0),
        (old_light, "2026-01-02", 2.0),
        (new_light, "2026-01-01", 3.0),
    ] {
        sqlx::query(
            "INSERT INTO telemetry (time, agency_id, device_id, function_id, attribute, value_double)
             VALUES ($1::date, $2, $3, 'lampMonitor001', 'activePower', $4)",
        )
        .bind(day)
        .bind(agency)
        .bind(device)
        .bind(value)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    // The newer light's key has its row already (written by the ingest): it stays as it is.
    sqlx::query(
        "INSERT INTO device_latest (device_id, function_id, attribute, agency_id, time, value_double)
         VALUES ($1, 'lampMonitor001', 'activePower', $2, '2026-01-01', 30)",
    )
    .bind(new_light)
    .bind(agency)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO agencies (id, name, status, created_at, updated_at, version, telemetry_retention_days) VALUES ($1, 'Amos', 'active', now(), now(), 1, 10)")
        .bind(agency)
        .execute(&db.pool)
        .await
        .unwrap();

    eriop_migrations::up(&db.pool).await.unwrap();
    let latest: Vec<(uuid::Uuid, f64)> =
        sqlx::query_as("SELECT device_id, value_double FROM device_latest ORDER BY device_id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(latest, vec![(old_light, 2.0), (new_light, 30.0)]);

    let now: chrono::DateTime<chrono::Utc> = "2026-06-01T00:00:00Z".parse().unwrap();
    let purged = eriop_projections::retention::purge(&db.pool, &db.pool, now)
        .await
        .unwrap();
    assert_eq!(purged, vec![(agency, 3)]);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM telemetry")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}
