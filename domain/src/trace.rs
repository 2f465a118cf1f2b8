//! W3C Trace Context (`traceparent`): how one request is followed from the gateway into the
//! event store (event metadata), NATS (message headers) and the services that consume it
//! (projections, device supervisor, bridge downlink), whose log lines then carry its trace id.
//!
//! `00-{trace id, 32 hex}-{parent span id, 16 hex}-{flags, 2 hex}`. A header that does not
//! parse is ignored (a new trace starts): a client's bytes never reach a log unchecked.

use std::fmt;

/// The header's name, on HTTP and on NATS, and the event metadata key.
pub const TRACEPARENT: &str = "traceparent";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
}

fn hex_to<const N: usize>(hex: &str) -> Option<[u8; N]> {
    if hex.len() != N * 2
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl TraceContext {
    /// A `traceparent` value, if it is one (version 00, or a later version's first four
    /// fields; ids not all zero).
    pub fn parse(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let version = hex_to::<1>(version)?[0];
        if version == 0xff || (version == 0 && parts.next().is_some()) {
            return None;
        }
        let trace_id = hex_to::<16>(trace)?;
        let span_id = hex_to::<8>(span)?;
        let flags = hex_to::<1>(flags)?[0];
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// A context from its ids (a span exporter's own span), if they are valid (not all zero).
    pub fn from_ids(trace_id: [u8; 16], span_id: [u8; 8], sampled: bool) -> Option<Self> {
        (trace_id != [0; 16] && span_id != [0; 8]).then_some(Self {
            trace_id,
            span_id,
            sampled,
        })
    }

    pub fn trace_id_bytes(&self) -> [u8; 16] {
        self.trace_id
    }

    pub fn span_id_bytes(&self) -> [u8; 8] {
        self.span_id
    }

    /// The caller's sampling decision (flag 01): an exporter keeps the trace or drops it.
    pub fn sampled(&self) -> bool {
        self.sampled
    }

    /// A new trace (a request that came without one).
    pub fn root() -> Self {
        let trace_id = *uuid::Uuid::new_v4().as_bytes();
        Self {
            trace_id,
            span_id: Self::new_span_id(),
            sampled: true,
        }
    }

    /// The same trace, one step further (this service's own span).
    pub fn child(&self) -> Self {
        Self {
            span_id: Self::new_span_id(),
            ..*self
        }
    }

    fn new_span_id() -> [u8; 8] {
        let random = uuid::Uuid::new_v4();
        let mut id = [0u8; 8];
        id.copy_from_slice(&random.as_bytes()[..8]);
        if id == [0; 8] {
            id[7] = 1;
        }
        id
    }

    /// The trace id, as log lines and trace stores show it.
    pub fn trace_id(&self) -> String {
        hex(&self.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex(&self.span_id)
    }
}

impl fmt::Display for TraceContext {
    /// The `traceparent` value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id(),
            self.span_id(),
            u8::from(self.sampled)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips_and_a_child_keeps_the_trace() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceContext::parse(header).unwrap();
        assert_eq!(parsed.to_string(), header);
        assert_eq!(parsed.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let child = parsed.child();
        assert_eq!(child.trace_id(), parsed.trace_id());
        assert_ne!(child.span_id(), parsed.span_id());
        let root = TraceContext::root();
        assert_eq!(TraceContext::parse(&root.to_string()), Some(root));
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e47\u{1b}6-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736é-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad:?}");
        }
        // A later version may add fields: its first four are read.
        assert!(TraceContext::parse(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more"
        )
        .is_some());
    }
}
