//! Read-model progress hints: after a projection commits an aggregate's event, it says so on
//! core NATS (`eriop.projected.{aggregate_type}.{id}`, the version as the payload), and a
//! gateway waiting to answer a command (DESIGN.md rule 3, read your writes) looks at the
//! read model then, instead of polling it every few milliseconds (issue 13).
//!
//! A hint is only a wake-up, never data: it is published after the commit, fire and forget,
//! kept by no stream, and the gateway still reads the version from the read model before it
//! answers. A lost hint (NATS restarting, a projection killed between commit and publish)
//! costs a waiter its slower fallback look, nothing else; a forged one, one extra look.

use bytes::Bytes;
use uuid::Uuid;

use crate::Topology;

/// One projected write, as a hint carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    pub aggregate_type: String,
    pub id: Uuid,
    pub version: i64,
}

impl Hint {
    /// The hint for an event of the store, or none when its id is not a UUID (every read
    /// model is keyed by one; anything else would not be a valid subject token either).
    pub fn of(aggregate_type: &str, aggregate_id: &str, version: i64) -> Option<Self> {
        let valid_type = !aggregate_type.is_empty()
            && aggregate_type
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_');
        Some(Self {
            aggregate_type: valid_type.then(|| aggregate_type.to_owned())?,
            id: aggregate_id.parse().ok()?,
            version,
        })
    }

    pub fn subject(&self, topology: &Topology) -> String {
        topology.projected_subject(&self.aggregate_type, &self.id.to_string())
    }

    pub fn payload(&self) -> Bytes {
        Bytes::from(self.version.to_string())
    }

    /// Reads a hint back from a message of `topology.projected_all()`; `None` for anything
    /// else (a hostile publisher's bytes are parsed, never trusted further).
    pub fn parse(topology: &Topology, subject: &str, payload: &[u8]) -> Option<Self> {
        let all = topology.projected_all();
        let root = all.strip_suffix('>')?;
        let (aggregate_type, id) = subject.strip_prefix(root)?.split_once('.')?;
        let version = std::str::from_utf8(payload).ok()?.parse().ok()?;
        Self::of(aggregate_type, id, version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hint_reads_back_as_it_was_published() {
        for topology in [Topology::new(""), Topology::new("t42")] {
            let hint = Hint::of("device_class", &Uuid::now_v7().to_string(), 17).unwrap();
            let subject = hint.subject(&topology);
            assert!(subject.starts_with(topology.projected_all().trim_end_matches('>')));
            assert_eq!(
                Hint::parse(&topology, &subject, &hint.payload()),
                Some(hint)
            );
        }
    }

    #[test]
    fn anything_else_is_not_a_hint() {
        let topology = Topology::new("t1");
        let id = Uuid::now_v7();
        let good = format!("t1.eriop.projected.agency.{id}");
        assert!(Hint::parse(&topology, &good, b"3").is_some());
        for (subject, payload) in [
            (good.as_str(), &b"three"[..]),
            (good.as_str(), b""),
            (good.as_str(), b"\xff"),
            ("t1.eriop.projected.agency.not-a-uuid", b"3"),
            (
                "t1.eriop.projected.Agency.0192a000-0000-7000-8000-000000000000",
                b"3",
            ),
            (
                "t2.eriop.projected.agency.0192a000-0000-7000-8000-000000000000",
                b"3",
            ),
            (
                "t1.eriop.events.agency.0192a000-0000-7000-8000-000000000000",
                b"3",
            ),
            ("t1.eriop.projected.agency", b"3"),
        ] {
            assert_eq!(Hint::parse(&topology, subject, payload), None, "{subject}");
        }
        assert_eq!(Hint::of("agency", "x.y", 1), None);
        assert_eq!(Hint::of("agency.>", &id.to_string(), 1), None);
    }
}
