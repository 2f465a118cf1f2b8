//! The metadata every stored event carries (DESIGN.md rule 1): who, in which agency,
//! through which request, which command, when.

use std::collections::HashMap;

use chrono::{SecondsFormat, Utc};
use eriop_domain::metadata;

pub struct Audit<'a> {
    pub actor: &'a str,
    pub agency_id: &'a str,
    pub request_id: &'a str,
}

impl<'a> Audit<'a> {
    /// What `caller` does, through request `request_id`.
    pub fn by(caller: &'a crate::services::auth::Caller, request_id: &'a str) -> Self {
        Self {
            actor: &caller.claims.sub,
            agency_id: &caller.claims.agency,
            request_id,
        }
    }

    /// `time` is the wall clock's, always: the audit trail records when a change was made,
    /// even in tests that move the domain's clock (lockout, token expiry) by hand.
    pub fn metadata(&self, command: &str) -> HashMap<String, String> {
        let time = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
        let mut metadata = HashMap::from([
            (metadata::ACTOR.to_owned(), self.actor.to_owned()),
            (metadata::AGENCY_ID.to_owned(), self.agency_id.to_owned()),
            (metadata::REQUEST_ID.to_owned(), self.request_id.to_owned()),
            (metadata::COMMAND.to_owned(), command.to_owned()),
            (metadata::TIME.to_owned(), time),
        ]);
        // The request's trace travels with the event (the relay puts it in the NATS headers).
        if let Some(trace) = crate::http::edge::current_trace() {
            metadata.insert(
                eriop_domain::trace::TRACEPARENT.to_owned(),
                trace.to_string(),
            );
        }
        metadata
    }
}
