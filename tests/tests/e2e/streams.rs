//! The streams of DESIGN.md exist as code, created or updated idempotently; a message the
//! projection cannot decode goes to DLQ with its reason and does not stop the others.

use std::time::Duration;

use eriop_nats::streams::ensure_streams;
use eriop_nats::{Stream, Topology};
use eriop_tests::{unique_prefix, wait, TestApp};

#[tokio::test]
async fn streams_are_created_then_updated_in_place() {
    eriop_tests::init();
    let topology = Topology::new(unique_prefix());
    let js =
        async_nats::jetstream::new(async_nats::connect(eriop_tests::nats_url()).await.unwrap());
    ensure_streams(&js, &topology).await.unwrap();
    // A drifted definition (someone edited it by hand) is put back; nothing is duplicated.
    let mut drifted = topology.stream_config(Stream::Telemetry);
    drifted.max_age = Duration::from_secs(2 * 24 * 3600);
    js.update_stream(drifted).await.unwrap();
    ensure_streams(&js, &topology).await.unwrap();

    for which in Stream::ALL {
        let expected = topology.stream_config(which);
        let mut stream = js.get_stream(&expected.name).await.unwrap();
        let config = stream.info().await.unwrap().config.clone();
        assert_eq!(config.subjects, expected.subjects, "{}", expected.name);
        assert_eq!(config.max_age, expected.max_age, "{}", expected.name);
        assert_eq!(
            config.duplicate_window, expected.duplicate_window,
            "{}",
            expected.name
        );
        assert_eq!(
            config.storage,
            async_nats::jetstream::stream::StorageType::File
        );
    }
    let names = ["EVENTS", "TELEMETRY", "DEVICE", "COMMANDS", "DLQ"];
    for (which, name) in Stream::ALL.into_iter().zip(names) {
        assert!(topology.stream_name(which).ends_with(name));
    }
}

#[tokio::test]
async fn an_undecodable_event_goes_to_the_dlq_and_the_projection_goes_on() {
    let app = TestApp::spawn().await;
    app.created_agency("First").await;
    let js = app.jetstream().await;
    let subject = app
        .topology
        .event_subject("agency", "00000000-0000-0000-0000-00000000dead");
    js.publish(subject, "{not json".into())
        .await
        .unwrap()
        .await
        .unwrap();

    let dlq_name = app.topology.stream_name(Stream::Dlq);
    let message = wait::until(
        "the DLQ to receive the message",
        Duration::from_secs(30),
        || {
            let js = js.clone();
            let dlq_name = dlq_name.clone();
            async move {
                let stream = js.get_stream(&dlq_name).await.ok()?;
                stream.get_raw_message(1).await.ok()
            }
        },
    )
    .await;
    assert_eq!(&message.payload[..], b"{not json");
    let reason = message.headers.get("Eriop-Reason").unwrap().to_string();
    assert!(reason.contains("not a stored event"), "{reason}");
    assert!(message.subject.ends_with("eriop.dlq.projections.agencies"));

    // The pipeline did not stop.
    let after = app.created_agency("After the bad message").await;
    assert_eq!(after["version"], 1);
}
