//! Connecting to NATS the same way in every service: in the background (a service starts
//! even while NATS is down and reports it in readiness), reconnecting forever.

use std::time::Duration;

use async_nats::jetstream;

use crate::backoff::Backoff;

/// The servers of `ERIOP_NATS_URL`: one URL, or several comma-separated (the nodes of a
/// cluster; the client also learns the others from the first it reaches).
pub fn servers(url: &str) -> Result<Vec<async_nats::ServerAddr>, async_nats::ConnectError> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.parse::<async_nats::ServerAddr>().map_err(|e| {
                async_nats::ConnectError::with_source(async_nats::ConnectErrorKind::ServerParse, e)
            })
        })
        .collect()
}

/// Connects without waiting for the server. The client reconnects with capped, jittered
/// backoff for as long as the process lives.
pub async fn nats(url: &str, name: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
    let servers = servers(url)?;
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
        .connect(servers)
        .await
}

/// A JetStream context whose requests (publish acks included) give up after `timeout`, so
/// callers notice an outage and back off instead of hanging.
pub fn jetstream(client: async_nats::Client, timeout: Duration) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(timeout)
        .build(client)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cluster_is_a_comma_separated_list_of_servers() {
        let servers = super::servers("nats://127.0.0.1:4222, nats://127.0.0.1:4223,").unwrap();
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[1].port(), 4223);
        assert!(super::servers("nats://127.0.0.1:notaport").is_err());
    }
}
