//! Which device a Fundamentum `(registry, serial)` is: the device registry read model (joined
//! with the agency that owns the registry), cached.
//! Only known devices are cached (for a short while, so a decommissioning takes effect); an
//! unknown one is asked again each time, so a device registered a moment ago is found.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use eriop_domain::device::FunctionDesc;
use sqlx::types::Json;
use sqlx::PgPool;
use uuid::Uuid;

/// How long a known device is trusted from the cache: a decommissioning, a registry taken
/// back or a suspension reaches the bridge within this.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub id: Uuid,
    pub agency_id: Uuid,
    pub functions: Vec<FunctionDesc>,
    /// Its agency is suspended: its messages go to `DLQ` until reactivation.
    pub suspended: bool,
    /// Its agency's own telemetry quota (messages a second), if a platform administrator set one.
    pub telemetry_quota: Option<u32>,
}

/// A registry row: device id, agency id, functions, agency suspended, agency's telemetry quota.
type Row = (Uuid, Uuid, Json<Vec<FunctionDesc>>, bool, Option<i64>);

pub struct Registry {
    pool: PgPool,
    ttl: Duration,
    cache: HashMap<(String, String), (DeviceInfo, Instant)>,
}

impl Registry {
    pub fn new(pool: PgPool, ttl: Duration) -> Self {
        Self {
            pool,
            ttl,
            cache: HashMap::new(),
        }
    }

    pub async fn lookup(
        &mut self,
        registry: &str,
        serial: &str,
    ) -> Result<Option<DeviceInfo>, sqlx::Error> {
        let key = (registry.to_owned(), serial.to_owned());
        if let Some((info, at)) = self.cache.get(&key) {
            if at.elapsed() < self.ttl {
                return Ok(Some(info.clone()));
            }
        }
        // The bridge serves every agency.
        let mut tx = eriop_nats::db::begin(&self.pool, eriop_nats::db::Scope::All).await?;
        // The device counts only while its registry belongs to its agency (DESIGN.md rule 7).
        let row: Option<Row> = sqlx::query_as(
            "SELECT d.id, d.agency_id, d.functions, coalesce(a.status = 'suspended', false),
                    a.telemetry_quota
               FROM devices d
               JOIN registries r ON r.registry = d.registry AND r.agency_id = d.agency_id
               LEFT JOIN agencies a ON a.id = d.agency_id
              WHERE d.registry = $1 AND d.serial = $2 AND NOT d.decommissioned",
        )
        .bind(registry)
        .bind(serial)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(match row {
            Some((id, agency_id, Json(functions), suspended, quota)) => {
                let info = DeviceInfo {
                    id,
                    agency_id,
                    functions,
                    suspended,
                    telemetry_quota: quota.and_then(|q| u32::try_from(q).ok()),
                };
                self.cache.insert(key, (info.clone(), Instant::now()));
                Some(info)
            }
            None => {
                self.cache.remove(&key);
                None
            }
        })
    }
}
