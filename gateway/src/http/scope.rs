//! Tenancy as a type. Agency data is read and written only in a transaction that row-level
//! security binds to one agency (migration 0008), and the only way a handler opens one is an
//! [`AgencyScope`], which only the permission extractor (`Allowed`) hands out, for the
//! caller's active agency. Acting for another agency takes [`AgencyScope::other`], which
//! only a caller who is a platform administrator *now* passes; acting for every agency takes
//! a [`PlatformScope`], which only `Allowed<AgenciesManage>` hands out.
//!
//! So a handler that forgot to bind the agency still sees one agency only, and code that did
//! not pass the permission check holds nothing that opens agency data. The test
//! `agency_transactions_are_opened_only_by_scopes` fails if any other module opens one.

use eriop_domain::{AgencyId, BuiltInRole};
use eriop_nats::db::pipelined::{Reads, Statement};
use sqlx::{PgPool, Postgres, Transaction};

use crate::http::error::ApiError;
use crate::services::auth::Caller;
use crate::state::AppState;
use crate::tenancy::{self, Scope};

/// One agency's data, for a caller allowed to act there.
#[derive(Clone)]
pub struct AgencyScope {
    agency: AgencyId,
    pool: PgPool,
    telemetry: PgPool,
    /// Telemetry has a database of its own (`ERIOP_TIMESCALE_URL`).
    telemetry_apart: bool,
    /// Reads in one round trip, where this gateway has them (`ERIOP_PIPELINED_READS`).
    reads: Option<Reads>,
}

impl AgencyScope {
    /// Only the permission extractor calls it, with the caller's active agency.
    pub(super) fn new(state: &AppState, agency: AgencyId) -> Self {
        Self {
            agency,
            pool: state.pool().clone(),
            telemetry: state.telemetry_pool().clone(),
            telemetry_apart: state.telemetry_apart(),
            reads: state.reads().cloned(),
        }
    }

    pub fn agency(&self) -> AgencyId {
        self.agency
    }

    /// A transaction on the agency's data (read models, roles, users).
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, ApiError> {
        Ok(tenancy::begin(&self.pool, Scope::Agency(self.agency.as_uuid())).await?)
    }

    /// Reads of the agency's data in one round trip, if this gateway pipelines them; if
    /// not, read in [`Self::begin`]'s transaction.
    pub fn pipelined(&self) -> Option<AgencyReads<'_>> {
        self.reads.as_ref().map(|reads| AgencyReads {
            reads,
            agency: self.agency,
        })
    }

    /// Whether telemetry is in a database of its own: if not, [`Self::begin`]'s transaction
    /// reads it too.
    pub fn telemetry_apart(&self) -> bool {
        self.telemetry_apart
    }

    /// A transaction on the agency's telemetry (its own database, TimescaleDB in production).
    pub async fn begin_telemetry(&self) -> Result<Transaction<'static, Postgres>, ApiError> {
        Ok(tenancy::begin(&self.telemetry, Scope::Agency(self.agency.as_uuid())).await?)
    }

    /// Another agency's data, for a caller who is a platform administrator now (current
    /// roles, not the token's claim). Anyone else, or an agency that does not exist, gets
    /// the same `404` as any unknown agency. The crossing is logged (`authz`).
    pub async fn other(&self, caller: &Caller, agency: AgencyId) -> Result<Self, ApiError> {
        if agency == self.agency {
            return Ok(self.clone());
        }
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM events WHERE aggregate_type = 'agency' AND aggregate_id = $1)",
        )
        .bind(agency.to_string())
        .fetch_one(&self.pool)
        .await?;
        if !caller.has_role(BuiltInRole::PlatformAdmin) || !exists {
            return Err(ApiError::NotFound("no such agency".into()));
        }
        tracing::info!(
            target: "authz",
            user_id = %caller.user_id(),
            agency_id = %self.agency,
            target_agency_id = %agency,
            outcome = "cross-agency",
            "platform admin acts in another agency"
        );
        Ok(Self {
            agency,
            pool: self.pool.clone(),
            telemetry: self.telemetry.clone(),
            telemetry_apart: self.telemetry_apart,
            reads: self.reads.clone(),
        })
    }
}

/// Reads of one agency's data in one round trip ([`AgencyScope::pipelined`]).
pub struct AgencyReads<'a> {
    reads: &'a Reads,
    agency: AgencyId,
}

impl AgencyReads<'_> {
    /// `statements` in one read-only transaction acting for the agency: each one's rows.
    pub async fn read(
        &self,
        statements: &[Statement<'_>],
    ) -> Result<Vec<Vec<tokio_postgres::Row>>, ApiError> {
        Ok(self
            .reads
            .read(Scope::Agency(self.agency.as_uuid()), statements)
            .await?)
    }
}

/// Every agency's data: platform views (agencies, registries), for `agencies:manage` only.
pub struct PlatformScope {
    pool: PgPool,
}

impl PlatformScope {
    /// Only `Allowed<AgenciesManage>` calls it.
    pub(super) fn of(scope: &AgencyScope) -> Self {
        Self {
            pool: scope.pool.clone(),
        }
    }

    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, ApiError> {
        Ok(tenancy::begin(&self.pool, Scope::All).await?)
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// Every `.rs` file under `dir`, with its path relative to `src/`.
    fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path: PathBuf = entry.path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let name = path
                    .strip_prefix(&src)
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                out.push((name, text));
            }
        }
    }

    /// Tenancy as a type, checked: outside the modules below, no code opens a transaction
    /// that names its agency scope itself; handlers get theirs from `Allowed` (an
    /// `AgencyScope`, or a `PlatformScope` for `agencies:manage`).
    #[test]
    fn agency_transactions_are_opened_only_by_scopes() {
        // Who may name a scope, and why.
        let may_name_an_agency = [
            "http/scope.rs",      // the handles themselves
            "services/identity/", // login: the agency's MFA rule, before any caller exists
        ];
        let may_open_all_agencies = [
            "http/scope.rs",       // PlatformScope
            "http/permission.rs",  // the caller's current roles, by its own id
            "services/identity/",  // authentication: suspension, before any caller exists
            "workers/supervisor/", // a background worker, for every agency
        ];
        let mut files = Vec::new();
        sources(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        assert!(files.len() > 20, "the sources were found");
        let mut offenders = Vec::new();
        for (name, text) in &files {
            let allowed = |list: &[&str]| list.iter().any(|a| name.starts_with(a));
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                let names_agency = code.contains("Scope::Agency");
                let opens_all = code.contains("Scope::All");
                let opens_raw = code.contains("db::begin") || code.contains("tenancy::begin");
                if (names_agency && !allowed(&may_name_an_agency))
                    || (opens_all && !allowed(&may_open_all_agencies))
                    || (opens_raw
                        && !allowed(&may_name_an_agency)
                        && !allowed(&may_open_all_agencies))
                {
                    offenders.push(format!("{name}:{}: {}", n + 1, line.trim()));
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "agency transactions opened outside a scope handle (take `scope` from `Allowed`):\n{}",
            offenders.join("\n")
        );
    }
}
