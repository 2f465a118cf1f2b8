//! An export built as the gateway builds it, signed with a gateway key, then altered.

use jsonwebtoken::jwk::JwkSet;
use proptest::prelude::*;
use sha2::{Digest, Sha256};

use super::*;
use crate::services::auth::keys::SigningKeys;

fn keys(secret: &[u8]) -> SigningKeys {
    SigningKeys::derive("EdDSA", secret, &[]).unwrap()
}

fn jwks(keys: &SigningKeys) -> JwkSet {
    serde_json::from_value(keys.jwks().clone()).unwrap()
}

/// Events of two interleaved aggregates, chained as the store's trigger chains them.
fn rows() -> Vec<EventRow> {
    let mut rows = Vec::new();
    let mut last: std::collections::HashMap<&str, String> = Default::default();
    for (i, (id, name)) in [
        ("a", "Laval"),
        ("b", "Lévis"),
        ("a", "Laval 2"),
        ("a", "Laval 3"),
        ("b", "Lévis \"2\""),
    ]
    .into_iter()
    .enumerate()
    {
        let previous = last.get(id).cloned().unwrap_or_default();
        let sequence = rows
            .iter()
            .filter(|r: &&EventRow| r.aggregate_id == id)
            .count() as i64
            + 1;
        let payload = format!(
            "{{\"AgencyRenamed\": {{\"name\": {}}}}}",
            serde_json::Value::from(name)
        );
        let metadata = format!("{{\"actor\": \"u\", \"previous_hash\": \"{previous}\"}}");
        let hash = chain_hash(
            &previous,
            "agency",
            id,
            sequence,
            "AgencyRenamed",
            "1.0",
            &payload,
            &metadata,
        );
        last.insert(id, hash.clone());
        rows.push(EventRow {
            aggregate_type: "agency".into(),
            aggregate_id: id.into(),
            sequence,
            event_type: "AgencyRenamed".into(),
            event_version: "1.0".into(),
            payload,
            metadata,
            recorded_at: format!("2026-12-04T00:00:0{i}.000000Z"),
            previous_hash: previous,
            hash,
        });
    }
    rows
}

/// The export's lines, signed with `keys`; `redact` redacts the event at that index.
fn export(keys: &SigningKeys, redact: Option<usize>) -> Vec<String> {
    let header = Header {
        eriop_audit_export: FORMAT,
        agency_id: None,
        from: None,
        to: None,
        exported_at: "2026-12-04T00:00:00Z".into(),
        exported_by: "u".into(),
    };
    let mut lines = vec![serde_json::to_string(&header).unwrap()];
    let rows = rows();
    let secret = serde_json::json!({ "AgencyRenamed": { "name": "[redacted]" } });
    for (i, row) in rows.iter().enumerate() {
        lines.push(row.line((redact == Some(i)).then_some(&secret)));
    }
    let mut digest = Sha256::new();
    for line in &lines {
        digest.update(line.as_bytes());
        digest.update(b"\n");
    }
    let mut heads: Vec<ChainHead> = ["a", "b"]
        .iter()
        .map(|id| {
            let last = rows.iter().rfind(|r| r.aggregate_id == *id).unwrap();
            ChainHead {
                aggregate_type: "agency".into(),
                aggregate_id: (*id).into(),
                sequence: last.sequence,
                hash: last.hash.clone(),
            }
        })
        .collect();
    heads.reverse(); // any order
    let end = End {
        events: rows.len() as u64,
        redacted: u64::from(redact.is_some()),
        sha256: hex::encode(digest.finalize()),
        chain_heads: heads,
    };
    let mut header = jsonwebtoken::Header::new(keys.algorithm);
    header.kid = Some(keys.kid().to_owned());
    let signed = Signed {
        iss: "eriop".into(),
        aud: AUDIENCE.into(),
        iat: 0,
        end,
    };
    let signature = jsonwebtoken::encode(&header, &signed, keys.encoding()).unwrap();
    lines.push(serde_json::json!({ "end": signed.end, "signature": signature }).to_string());
    lines
}

fn check(lines: &[String], keys: Option<&JwkSet>) -> Result<Report, BadLine> {
    let mut verifier = Verifier::new();
    for line in lines {
        verifier.line(line)?;
    }
    verifier.finish(keys)
}

#[test]
fn a_whole_export_verifies_with_its_signature() {
    let keys = keys(b"gateway secret");
    let report = check(&export(&keys, None), Some(&jwks(&keys))).unwrap();
    assert_eq!(
        report,
        Report {
            events: 5,
            chains: 2,
            redacted: 0,
            signature_checked: true
        }
    );
    // A redacted line is counted, and the chain through it still holds.
    let report = check(&export(&keys, Some(2)), Some(&jwks(&keys))).unwrap();
    assert_eq!(report.redacted, 1);
}

#[test]
fn the_first_bad_line_is_named() {
    let keys = keys(b"gateway secret");
    let good = export(&keys, None);
    let named = |lines: Vec<String>| check(&lines, Some(&jwks(&keys))).unwrap_err();

    let mut altered = good.clone();
    altered[3] = altered[3].replace("Laval 2", "Forged");
    let bad = named(altered);
    assert_eq!(bad.line, 4);
    assert!(bad.reason.contains("altered"), "{bad}");

    // A removed event: the next event of its chain says so.
    let mut removed = good.clone();
    removed.remove(3);
    let bad = named(removed);
    assert_eq!(bad.line, 4, "{bad}");
    assert!(bad.reason.contains("missing"), "{bad}");

    // Two events of one chain swapped.
    let mut swapped = good.clone();
    swapped.swap(3, 4);
    assert_eq!(named(swapped).line, 4);

    // The last event of a chain removed: only the end line can tell.
    let mut cut = good.clone();
    cut.remove(5);
    assert_eq!(named(cut).line, 6, "the end line");

    // Cut short: no end line.
    let bad = named(good[..4].to_vec());
    assert_eq!(bad.line, 5);
    assert!(bad.reason.contains("cut short"));

    // A redacted line made up: its hash cannot be checked, but the signed digest can.
    let mut forged = good.clone();
    forged[1] =
        forged[1]
            .replace("Laval", "Forged")
            .replacen("\"hash\"", "\"redacted\":true,\"hash\"", 1);
    assert_eq!(named(forged).line, 7);
}

#[test]
fn the_signature_must_be_the_gateways_over_this_end_line() {
    let keys = keys(b"gateway secret");
    let lines = export(&keys, None);
    let stranger = self::keys(b"someone else");
    let bad = check(&lines, Some(&jwks(&stranger))).unwrap_err();
    assert_eq!(bad.line, 7);
    assert!(bad.reason.contains("not among the public keys"), "{bad}");
    // Another key's signature that claims the gateway's key id.
    let ours: serde_json::Value = serde_json::from_str(&lines[6]).unwrap();
    let end: End = serde_json::from_value(ours["end"].clone()).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(keys.kid().to_owned());
    let signed = Signed {
        iss: "eriop".into(),
        aud: AUDIENCE.into(),
        iat: 0,
        end,
    };
    let forged = jsonwebtoken::encode(&header, &signed, stranger.encoding()).unwrap();
    let mut mixed = lines.clone();
    mixed[6] = serde_json::json!({ "end": signed.end, "signature": forged }).to_string();
    let bad = check(&mixed, Some(&jwks(&keys))).unwrap_err();
    assert!(bad.reason.contains("does not hold"), "{bad}");
    // HS256 proves nothing outside.
    let shared = SigningKeys::derive("HS256", b"gateway secret", &[]).unwrap();
    let hs = export(&shared, None);
    assert!(check(&hs, Some(&jwks(&keys)))
        .unwrap_err()
        .reason
        .contains("not EdDSA"));
    // Without keys the rest is still checked, and the report says the signature was not.
    assert!(!check(&lines, None).unwrap().signature_checked);
}

proptest! {
    /// Any change of one byte anywhere in a signed export is refused.
    #[test]
    fn any_changed_byte_is_refused(line in 0usize..7, at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let keys = keys(b"gateway secret");
        let mut lines = export(&keys, Some(1));
        let mut bytes = lines[line].clone().into_bytes();
        let at = at.index(bytes.len());
        prop_assume!(bytes[at] != byte);
        bytes[at] = byte;
        match String::from_utf8(bytes) {
            Err(_) => {} // the command line refuses a line that is not UTF-8
            Ok(changed) => {
                // A changed byte may split the line in two.
                let changed: Vec<String> = changed.split('\n').map(str::to_owned).collect();
                lines.splice(line..=line, changed);
                prop_assert!(check(&lines, Some(&jwks(&keys))).is_err());
            }
        }
    }
}

proptest! {
    /// Whatever the file holds, the verifier answers (a report or a named line), never panics.
    #[test]
    fn any_file_gets_an_answer(lines in prop::collection::vec("\\PC{0,80}|\\{\"end\".{0,40}|\\{\"aggregate_type\".{0,60}", 0..8)) {
        let keys = keys(b"gateway secret");
        match check(&lines, Some(&jwks(&keys))) {
            Ok(report) => prop_assert!(lines.len() >= 2 && report.events as usize + 2 <= lines.len()),
            Err(bad) => prop_assert!(bad.line >= 1 && bad.line <= lines.len() + 1),
        }
    }
}
