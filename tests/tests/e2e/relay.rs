//! Two relays on one event store: one publishes, the other stands by and takes over.

use std::time::Duration;

use eriop_gateway::relay::Relay;
use eriop_nats::connect;
use eriop_tests::{wait, TestApp, TestDb};

#[tokio::test]
async fn of_two_relays_one_wins_and_the_other_takes_over() {
    // The app's own relay is off: the two below are the only ones.
    let app = TestApp::spawn_with(TestDb::migrated().await, |s| s.relay_enabled = false).await;
    let js = || async {
        let client = connect::nats(&eriop_tests::nats_url(), "test-relay")
            .await
            .unwrap();
        connect::jetstream(client, Duration::from_secs(2))
    };
    let first = Relay::new(app.db.pool.clone(), js().await, app.topology.clone(), 100);
    let second = Relay::new(app.db.pool.clone(), js().await, app.topology.clone(), 100);
    let (s1, s2) = (first.status(), second.status());
    let t1 = tokio::spawn(first.run());
    let t2 = tokio::spawn(second.run());

    wait::until("one relay to lead", Duration::from_secs(10), || async {
        (s1.is_leader() || s2.is_leader()).then_some(())
    })
    .await;
    assert!(!(s1.is_leader() && s2.is_leader()), "only one leader");

    for n in 0..10 {
        app.created_agency(&format!("Agency {n}")).await;
    }
    // Every stored event so far: these ten, and the bootstrap's (platform agency, admin).
    let stored = app.db.count("SELECT count(*) FROM events").await as u64;
    app.await_stream_len(stored).await;
    let on_stream = app.events_on_stream().await;
    assert_eq!(on_stream.len() as u64, stored);
    let (leader, standby, leader_task, standby_status) = if s1.is_leader() {
        (s1.clone(), s2.clone(), t1, s2.clone())
    } else {
        (s2.clone(), s1.clone(), t2, s1.clone())
    };
    assert_eq!(leader.published(), stored);
    assert_eq!(standby.published(), 0, "the standby published nothing");

    // The leader dies: its lock connection closes and the standby takes over.
    leader_task.abort();
    wait::until(
        "the standby to take over",
        Duration::from_secs(15),
        || async { standby_status.is_leader().then_some(()) },
    )
    .await;
    for n in 10..13 {
        app.created_agency(&format!("Agency {n}")).await;
    }
    app.await_stream_len(stored + 3).await;
    let ids: std::collections::HashSet<_> = app
        .events_on_stream()
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids.len() as u64, stored + 3, "each event once");
    assert_eq!(standby.published(), 3);
}

/// The relay is woken by the gateway that stored events (`eriop.stored` on core NATS, sent
/// after the commit), no longer by `NOTIFY` in the storing transaction, which serialized
/// every commit (migration 0028). An event stored by anything else, without a signal, is
/// relayed all the same by the relay's poll.
#[tokio::test]
async fn a_gateway_signals_what_it_stored_and_an_event_stored_by_sql_is_relayed_too() {
    use futures::StreamExt;
    let app = TestApp::spawn().await;
    let mut signals = app.subscribed(app.topology.stored_subject()).await;
    let agency = app.created_agency("Granby").await;
    tokio::time::timeout(Duration::from_secs(10), signals.next())
        .await
        .expect("the gateway signals the relay after storing")
        .unwrap();
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM pg_trigger WHERE tgname = 'events_relay_notify'")
            .await,
        0,
        "no NOTIFY from the storing transaction"
    );

    // Stored by SQL, as a tool would: no signal, and still relayed.
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'agency', aggregate_id, 2, 'AgencyRenamed', '1.0',
                jsonb_build_object('AgencyRenamed', jsonb_build_object('name', 'Granby-Est')),
                metadata - 'previous_hash'
           FROM events WHERE aggregate_type = 'agency' AND aggregate_id = $1",
    )
    .bind(agency["id"].as_str().unwrap())
    .execute(&app.db.pool)
    .await
    .unwrap();
    let stored = app.db.count("SELECT count(*) FROM events").await as u64;
    app.await_stream_len(stored).await;
    wait::until(
        "the read model shows it",
        Duration::from_secs(30),
        || async {
            (app.agency(agency["id"].as_str().unwrap()).await["name"] == "Granby-Est").then_some(())
        },
    )
    .await;
}
