//! `GET /api/v1/audit/export?from=&to=`: the trail as NDJSON to take away, streamed, with
//! the chain heads it covers and a signature (format: `services::export`).
//!
//! The export is a consistent cut: its events are those below the store-order horizon at the
//! start (`eriop_nats::db::store_horizon`), read in keyset pages, each page its own short query, so
//! a long download holds no transaction open. A caller sees the aggregates whose stream
//! belongs to its agency (the agency of their first event, as for `/audit/verify`), whole
//! within the time range, so every chain in the file can be followed.

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use jsonwebtoken::Header as JwsHeader;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{erased_users, redact, user_ids, ERASED, REDACTED};
use crate::http::error::ApiError;
use crate::http::extract::ApiQuery;
use crate::http::permission::AuditRead;
use crate::http::Allowed;
use crate::services::export::{ChainHeads, End, EventRow, Header, Signed, AUDIENCE, FORMAT};
use crate::state::AppState;
use eriop_domain::user::{User, UserEvent};
use eriop_domain::BuiltInRole;

const PAGE: i64 = 1_000;
/// Where an export leaves a person's sealed data out.
const SEALED: &str = "[sealed]";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// Recorded at or after (RFC 3339).
    from: Option<DateTime<Utc>>,
    /// Recorded before (RFC 3339).
    to: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct Row {
    #[sqlx(flatten)]
    event: EventRow,
    transaction_id: i64,
    position: i64,
}

/// What the stream has written so far.
struct Progress {
    after: (i64, i64),
    digest: Sha256,
    heads: ChainHeads,
    events: u64,
    redacted: u64,
    done: bool,
}

impl Progress {
    fn write(&mut self, out: &mut String, line: &str) {
        self.digest.update(line.as_bytes());
        self.digest.update(b"\n");
        out.push_str(line);
        out.push('\n');
    }
}

pub async fn export(
    Allowed { caller, .. }: Allowed<AuditRead>,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    // `to` at or before `from` is an empty range: an export of no event, still signed.
    let horizon = eriop_nats::db::store_horizon(state.pool()).await?;
    let agency =
        (!caller.has_role(BuiltInRole::PlatformAdmin)).then(|| caller.agency_id().to_string());
    let now = state.auth().now().millis();
    let rfc3339 = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Micros, true);
    let header = Header {
        eriop_audit_export: FORMAT,
        agency_id: agency.clone(),
        from: query.from.map(rfc3339),
        to: query.to.map(rfc3339),
        exported_at: DateTime::from_timestamp_millis(now)
            .map(rfc3339)
            .unwrap_or_default(),
        exported_by: caller.claims.sub.clone(),
    };
    let mut first = String::new();
    let mut progress = Progress {
        after: (-1, -1),
        digest: Sha256::new(),
        heads: ChainHeads::default(),
        events: 0,
        redacted: 0,
        done: false,
    };
    progress.write(
        &mut first,
        &serde_json::to_string(&header).map_err(internal)?,
    );

    let chunks = futures::stream::try_unfold(Some(progress), move |progress| {
        let state = state.clone();
        let agency = agency.clone();
        async move {
            let Some(mut progress) = progress else {
                return Ok::<_, ApiError>(None);
            };
            if progress.done {
                return Ok(None);
            }
            let rows: Vec<Row> = sqlx::query_as(
                r#"SELECT e.aggregate_type, e.aggregate_id, e.sequence, e.event_type, e.event_version,
                          e.payload::text AS payload, e.metadata::text AS metadata,
                          to_char(e.recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS recorded_at,
                          coalesce(encode(e.previous_hash, 'hex'), '') AS previous_hash,
                          encode(e.hash, 'hex') AS hash, e.transaction_id, e.position
                     FROM events e
                    WHERE e.transaction_id < $1 AND (e.transaction_id, e.position) > ($2, $3)
                      AND ($4::timestamptz IS NULL OR e.recorded_at >= $4)
                      AND ($5::timestamptz IS NULL OR e.recorded_at < $5)
                      AND ($6::text IS NULL OR EXISTS (
                            SELECT 1 FROM events f
                             WHERE f.aggregate_type = e.aggregate_type AND f.aggregate_id = e.aggregate_id
                               AND f.sequence = 1 AND f.metadata ->> 'agency_id' = $6))
                    ORDER BY e.transaction_id, e.position
                    LIMIT $7"#,
            )
            .bind(horizon)
            .bind(progress.after.0)
            .bind(progress.after.1)
            .bind(query.from)
            .bind(query.to)
            .bind(&agency)
            .bind(PAGE)
            .fetch_all(state.pool())
            .await?;
            let erased = erased_users(
                state.pool(),
                user_ids(rows.iter().map(|r| {
                    (
                        r.event.aggregate_type.as_str(),
                        r.event.aggregate_id.as_str(),
                    )
                })),
            )
            .await?;
            let mut chunk = String::with_capacity(rows.len() * 600);
            for row in &rows {
                let redacted =
                    secrets_redacted(&row.event, erased.contains(&row.event.aggregate_id));
                progress.redacted += u64::from(redacted.is_some());
                progress.events += 1;
                progress.heads.record(
                    &row.event.aggregate_type,
                    &row.event.aggregate_id,
                    row.event.sequence,
                    &row.event.hash,
                );
                progress.after = (row.transaction_id, row.position);
                let line = row.event.line(redacted.as_ref());
                progress.write(&mut chunk, &line);
            }
            if (rows.len() as i64) < PAGE {
                chunk.push_str(&end_line(&state, &progress)?);
                chunk.push('\n');
                progress.done = true;
            }
            Ok(Some((chunk, Some(progress))))
        }
    });
    let body = futures::stream::once(async move { Ok::<_, ApiError>(first) })
        .chain(chunks)
        .map(|r| r.map_err(|e| std::io::Error::other(e.to_string())));
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"eriop-audit-export.ndjson\"",
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// The payload with its secrets redacted, when it held any (a user's password or client
/// secret hash, sealed TOTP secret, recovery codes' hashes), and with no personal data: an
/// export leaves the platform, so even sealed emails and names stay behind (`[sealed]`, or
/// `[erased]` once the person was erased).
fn secrets_redacted(event: &EventRow, erased: bool) -> Option<serde_json::Value> {
    if event.aggregate_type != <User as cqrs_es::Aggregate>::TYPE {
        return None;
    }
    let original: serde_json::Value = serde_json::from_str(&event.payload).ok()?;
    let mut payload = original.clone();
    redact(&mut payload, &UserEvent::SECRET_FIELDS, REDACTED);
    redact(
        &mut payload,
        &User::PERSONAL_FIELDS,
        if erased { ERASED } else { SEALED },
    );
    (payload != original).then_some(payload)
}

/// The end line: totals, digest and chain heads, signed with the gateway's token key.
fn end_line(state: &AppState, progress: &Progress) -> Result<String, ApiError> {
    let end = End {
        events: progress.events,
        redacted: progress.redacted,
        sha256: hex::encode(progress.digest.clone().finalize()),
        chain_heads: progress.heads.heads(),
    };
    let keys = &state.auth().keys;
    let mut header = JwsHeader::new(keys.algorithm);
    header.kid = Some(keys.kid().to_owned());
    let signed = Signed {
        iss: state.auth().issuer.clone(),
        aud: AUDIENCE.to_owned(),
        iat: state.auth().now().millis() / 1000,
        end,
    };
    let signature = jsonwebtoken::encode(&header, &signed, keys.encoding()).map_err(internal)?;
    serde_json::to_string(&serde_json::json!({ "end": signed.end, "signature": signature }))
        .map_err(internal)
}

fn internal(e: impl std::error::Error + Send + Sync + 'static) -> ApiError {
    ApiError::Internal(Box::new(e))
}
