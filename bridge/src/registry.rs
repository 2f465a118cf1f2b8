//! Which device a Fundamentum `(registry, serial)` is: the device registry read model (joined
//! with the agency that owns the registry), cached.
//! Only known devices are cached (for a short while, so a decommissioning takes effect); an
//! unknown one is asked again each group, so a device registered a moment ago is found.
//!
//! A group's devices are looked up together first ([`Registry::prefetch`]): one query for
//! every device the cache does not hold, rather than one transaction each, in turn, while the
//! group waits. Why: a fleet's entries are cached when it first reports and so expire
//! together, and looked up one by one the group after each expiry waited for them all; a
//! flood of unknown serials cost one query a message. (It was not the cause of the p99
//! clusters every 31 s at 10,000 messages a second: that was the kernel's writeback,
//! docs/BENCHMARKS.md.)

use std::collections::{BTreeSet, HashMap, HashSet};
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

/// A device found: registry, serial, device id, agency id, functions, agency suspended,
/// agency's telemetry quota.
type Found = (
    String,
    String,
    Uuid,
    Uuid,
    Json<Vec<FunctionDesc>>,
    bool,
    Option<i64>,
);

/// A device's key: its Fundamentum registry and serial.
type Key = (String, String);

/// The device of each key that counts (DESIGN.md rule 7: only while its registry belongs to
/// its agency, and not decommissioned); `$1` registries and `$2` serials, pairwise.
const DEVICES: &str = "
SELECT d.registry, d.serial, d.id, d.agency_id, d.functions,
       coalesce(a.status = 'suspended', false), a.telemetry_quota
  FROM unnest($1::text[], $2::text[]) AS k(registry, serial)
  JOIN devices d ON d.registry = k.registry AND d.serial = k.serial
  JOIN registries r ON r.registry = d.registry AND r.agency_id = d.agency_id
  LEFT JOIN agencies a ON a.id = d.agency_id
 WHERE NOT d.decommissioned";

pub struct Registry {
    pool: PgPool,
    ttl: Duration,
    cache: HashMap<Key, (DeviceInfo, Instant)>,
    /// Keys the last [`Registry::prefetch`] found no device for: its group does not ask again.
    unknown: HashSet<Key>,
}

impl Registry {
    pub fn new(pool: PgPool, ttl: Duration) -> Self {
        Self {
            pool,
            ttl,
            cache: HashMap::new(),
            unknown: HashSet::new(),
        }
    }

    /// Looks up, in one query, every device of `keys` that the cache does not hold fresh,
    /// before a group is adapted; [`Registry::lookup`] then answers the group's devices
    /// without the database (a device not found: `None`, until the next prefetch).
    pub async fn prefetch(
        &mut self,
        keys: impl IntoIterator<Item = Key>,
    ) -> Result<(), sqlx::Error> {
        self.unknown.clear();
        let stale: BTreeSet<Key> = keys
            .into_iter()
            .filter(|key| self.fresh(key).is_none())
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        let (registries, serials): (Vec<&str>, Vec<&str>) = stale
            .iter()
            .map(|(registry, serial)| (registry.as_str(), serial.as_str()))
            .unzip();
        // The bridge serves every agency.
        let mut tx = eriop_nats::db::begin(&self.pool, eriop_nats::db::Scope::All).await?;
        let rows: Vec<Found> = sqlx::query_as(DEVICES)
            .bind(registries)
            .bind(serials)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let now = Instant::now();
        let mut found = HashSet::new();
        for row in rows {
            let (key, info) = info(row);
            self.cache.insert(key.clone(), (info, now));
            found.insert(key);
        }
        for key in stale {
            if !found.contains(&key) {
                self.cache.remove(&key);
                self.unknown.insert(key);
            }
        }
        Ok(())
    }

    fn fresh(&self, key: &Key) -> Option<&DeviceInfo> {
        self.cache
            .get(key)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(info, _)| info)
    }

    pub async fn lookup(
        &mut self,
        registry: &str,
        serial: &str,
    ) -> Result<Option<DeviceInfo>, sqlx::Error> {
        let key = (registry.to_owned(), serial.to_owned());
        if let Some(info) = self.fresh(&key) {
            return Ok(Some(info.clone()));
        }
        if self.unknown.contains(&key) {
            return Ok(None);
        }
        // A device the group's prefetch did not name (one a gateway's message names).
        let mut tx = eriop_nats::db::begin(&self.pool, eriop_nats::db::Scope::All).await?;
        let row: Option<Found> = sqlx::query_as(DEVICES)
            .bind([registry])
            .bind([serial])
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(match row {
            Some(row) => {
                let (_, info) = info(row);
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

fn info(
    (registry, serial, id, agency_id, Json(functions), suspended, quota): Found,
) -> (Key, DeviceInfo) {
    let info = DeviceInfo {
        id,
        agency_id,
        functions,
        suspended,
        telemetry_quota: quota.and_then(|q| u32::try_from(q).ok()),
    };
    ((registry, serial), info)
}
