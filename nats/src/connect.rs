//! Connecting to NATS the same way in every service: in the background (a service starts
//! even while NATS is down and reports it in readiness), reconnecting forever.

use std::time::Duration;

use async_nats::jetstream;

use crate::backoff::Backoff;

/// Connects without waiting for the server. The client reconnects with capped, jittered
/// backoff for as long as the process lives.
pub async fn nats(url: &str, name: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
    async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .ping_interval(Duration::from_secs(10))
        .reconnect_delay_callback(|attempts| {
            let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
            for _ in 0..attempts.min(16) {
                backoff.next_delay();
            }
            backoff.next_delay()
        })
        .connect(url)
        .await
}

/// A JetStream context whose requests (publish acks included) give up after `timeout`, so
/// callers notice an outage and back off instead of hanging.
pub fn jetstream(client: async_nats::Client, timeout: Duration) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(timeout)
        .build(client)
}
