//! A page applied at once gives the rows of its events applied one at a time (issue 13,
//! replay): a property test over random agency and device histories.
//!
//! The rebuild folds each aggregate's events of a page into one change and writes a page
//! with a few statements ([`eriop_projections::ReadModel::apply_page`]); the live consumer
//! applies one event at a time ([`eriop_projections::ReadModel::apply`]). Each case makes a
//! few agencies' and devices' histories (any event in any order: renames, suspensions,
//! decommission then online, timeouts set and cleared, commands issued, their statuses
//! with and without a message, a status for a command never issued or issued later,
//! redeliveries, a registration missing or repeated), interleaves them as a store would,
//! cuts the stream into pages of random sizes and applies it both ways, each into its own
//! schema, then compares every row and the count of events each way reported applied.
//!
//! Command ids are unique to a device, as the aggregate makes them.

use eriop_domain::device::{CommandStatus, DeviceEvent, DeviceRequest, FunctionDesc, Timeout};
use eriop_domain::{agency::AgencyEvent, AgencyId, Timestamp};
use eriop_nats::StoredEvent;
use eriop_projections::ReadModel;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const TABLES: [&str; 3] = ["agencies", "devices", "device_commands"];

fn agency_event(first: bool) -> BoxedStrategy<AgencyEvent> {
    let name = "[A-Za-z ]{1,8}";
    let created = name.prop_map(|name| AgencyEvent::AgencyCreated {
        id: AgencyId::from_uuid(uuid::Uuid::nil()),
        name,
    });
    if first {
        return created.boxed();
    }
    prop_oneof![
        1 => created,
        4 => name.prop_map(|name| AgencyEvent::AgencyRenamed { name }),
        2 => Just(AgencyEvent::AgencySuspended),
        2 => Just(AgencyEvent::AgencyReactivated),
        1 => any::<bool>().prop_map(|required| AgencyEvent::AgencyMfaRequirementChanged { required }),
        1 => (0..100u32).prop_map(|devices| AgencyEvent::AgencyDeviceQuotaSet { devices }),
        1 => (0..100u32).prop_map(|per_minute| AgencyEvent::AgencyCommandQuotaSet { per_minute }),
        1 => (0..100u32).prop_map(|per_second| AgencyEvent::AgencyTelemetryQuotaSet { per_second }),
        1 => (1..400u32).prop_map(|days| AgencyEvent::AgencyTelemetryRetentionSet { days }),
    ]
    .boxed()
}

/// A device event; command ids are `base + 0..2`, the device's own (few, so that a page
/// often holds several events of one command).
fn device_event(first: bool, base: i64) -> BoxedStrategy<DeviceEvent> {
    let registered = ("[a-z]{1,6}", proptest::option::of(1..3600u32)).prop_map(
        move |(name, offline_after_secs)| DeviceEvent::DeviceRegistered {
            id: uuid::Uuid::nil(),
            agency_id: AgencyId::from_uuid(uuid::Uuid::nil()),
            class_id: uuid::Uuid::nil(),
            functions: vec![FunctionDesc::parse("basic", "BasicFunction").unwrap()],
            fundamentum: eriop_domain::device::FundamentumId::parse("r", &format!("s{base}"))
                .unwrap(),
            name,
            offline_after_secs,
        },
    );
    if first {
        return registered.boxed();
    }
    let at = (0..1_000_000i64).prop_map(|ms| Timestamp::from_millis(1_790_000_000_000 + ms));
    let timeout = proptest::option::of(prop_oneof![
        Just(Timeout::ClassDefault),
        (1..3600u32).prop_map(Timeout::Seconds)
    ]);
    let command = base..base + 2;
    let status = prop_oneof![
        Just(CommandStatus::Ongoing),
        Just(CommandStatus::Retry),
        Just(CommandStatus::Success),
        Just(CommandStatus::Failure),
    ];
    prop_oneof![
        1 => registered,
        3 => (proptest::option::of("[a-z]{1,6}"), timeout)
            .prop_map(|(name, offline_after)| DeviceEvent::DeviceUpdated { name, offline_after }),
        1 => Just(DeviceEvent::DeviceDecommissioned),
        3 => at.clone().prop_map(|at| DeviceEvent::DeviceCameOnline { at }),
        3 => (at.clone(), proptest::option::of(at))
            .prop_map(|(at, last_activity)| DeviceEvent::DeviceWentOffline { at, last_activity }),
        3 => (command.clone(), "[a-z]{1,6}").prop_map(|(command_id, name)| DeviceEvent::CommandIssued {
            command_id,
            request: DeviceRequest::Fundamentum { name, parameters: serde_json::json!({}) },
        }),
        4 => (command, status, proptest::option::of("[a-z ]{0,6}")).prop_map(
            |(command_id, status, message)| DeviceEvent::CommandStatusChanged { command_id, status, message }
        ),
    ]
    .boxed()
}

/// One aggregate's history: whether it starts with its creation, then 0..12 events.
fn history<E: std::fmt::Debug + Clone + 'static>(
    event: impl Fn(bool) -> BoxedStrategy<E>,
) -> impl Strategy<Value = Vec<E>> {
    (
        proptest::bool::weighted(0.9),
        proptest::collection::vec(event(false), 0..12),
    )
        .prop_flat_map(move |(created, rest)| {
            let first = if created {
                event(true).prop_map(Some).boxed()
            } else {
                Just(None).boxed()
            };
            (first, Just(rest)).prop_map(|(first, rest)| first.into_iter().chain(rest).collect())
        })
}

#[derive(Debug, Clone)]
struct Case {
    agencies: Vec<Vec<AgencyEvent>>,
    devices: Vec<Vec<DeviceEvent>>,
    /// Which aggregate's next event the store holds next (indices wrap).
    order: Vec<usize>,
    /// Sizes of the pages, cycled.
    pages: Vec<usize>,
    /// Positions (wrapping) of events delivered a second time right after themselves.
    redelivered: Vec<usize>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec(history(agency_event), 1..4),
        (1..4usize).prop_flat_map(|n| {
            (0..n)
                .map(|i| history(move |first| device_event(first, 1_000 * (i as i64 + 1))))
                .collect::<Vec<_>>()
        }),
        proptest::collection::vec(0..64usize, 0..120),
        proptest::collection::vec(1..40usize, 1..4),
        proptest::collection::vec(0..200usize, 0..3),
    )
        .prop_map(|(agencies, devices, order, pages, redelivered)| Case {
            agencies,
            devices,
            order,
            pages,
            redelivered,
        })
}

fn stored(
    aggregate_type: &str,
    id: uuid::Uuid,
    sequence: i64,
    event: serde_json::Value,
) -> StoredEvent {
    let event_type = event
        .as_object()
        .and_then(|o| o.keys().next().cloned())
        .or_else(|| event.as_str().map(str::to_owned))
        .unwrap_or_default();
    StoredEvent {
        aggregate_type: aggregate_type.to_owned(),
        aggregate_id: id.to_string(),
        sequence,
        event_type,
        event_version: "1.0".to_owned(),
        payload: event,
        metadata: Default::default(),
        recorded_at: format!(
            "2026-12-05T10:{:02}:{:02}Z",
            sequence / 60 % 60,
            sequence % 60
        ),
        hash: String::new(),
    }
}

impl Case {
    /// The store: each aggregate's events in its order, aggregates interleaved by `order`,
    /// then what `order` did not reach, then the redeliveries.
    fn events(&self) -> Vec<StoredEvent> {
        // One aggregate's history, as the store numbers it.
        fn queue<E: serde::Serialize>(
            kind: &str,
            id: u128,
            history: &[E],
        ) -> std::collections::VecDeque<StoredEvent> {
            let id = uuid::Uuid::from_u128(id);
            (1..)
                .zip(history)
                .map(|(n, e)| stored(kind, id, n, serde_json::to_value(e).unwrap()))
                .collect()
        }
        let mut queues: Vec<_> = (0xa000..)
            .zip(&self.agencies)
            .map(|(id, h)| queue("agency", id, h))
            .chain(
                (0xd000..)
                    .zip(&self.devices)
                    .map(|(id, h)| queue("device", id, h)),
            )
            .collect();
        let mut events = Vec::new();
        for &pick in &self.order {
            let n = queues.len();
            if let Some(event) = (0..n)
                .map(|k| (pick + k) % n)
                .find_map(|q| queues[q].pop_front())
            {
                events.push(event);
            }
        }
        events.extend(queues.into_iter().flatten());
        for &at in &self.redelivered {
            if !events.is_empty() {
                let at = at % events.len();
                events.insert(at + 1, events[at].clone());
            }
        }
        events
    }

    fn pages(&self, events: &[StoredEvent]) -> Vec<std::ops::Range<usize>> {
        let mut pages = Vec::new();
        let mut start = 0;
        for &size in self.pages.iter().cycle() {
            if start >= events.len() {
                break;
            }
            let end = (start + size).min(events.len());
            pages.push(start..end);
            start = end;
        }
        pages
    }
}

/// A transaction acting for every agency whose unqualified tables are `schema`'s.
async fn schema(pool: &sqlx::PgPool, schema: &str) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = eriop_projections::begin_all_agencies(pool).await.unwrap();
    sqlx::query(&format!("SET LOCAL search_path TO {schema}, public"))
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

async fn rows(pool: &sqlx::PgPool, schema: &str) -> Vec<String> {
    let mut all = Vec::new();
    for table in TABLES {
        let rows: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT '{table} ' || row_to_json(t)::text FROM {schema}.{table} t ORDER BY 1"
        ))
        .fetch_all(pool)
        .await
        .unwrap();
        all.extend(rows);
    }
    all
}

/// Applies `case` one event at a time into `one` and page by page into `paged`; answers
/// both rows and both applied counts.
async fn both_ways(pool: &sqlx::PgPool, case: &Case) -> ((Vec<String>, u64), (Vec<String>, u64)) {
    for name in ["fold_one", "fold_paged"] {
        let mut ddl = format!("DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name};");
        for table in TABLES {
            ddl += &format!("CREATE TABLE {name}.{table} (LIKE public.{table} INCLUDING ALL);");
        }
        sqlx::raw_sql(&ddl).execute(pool).await.unwrap();
    }
    let events = case.events();
    let model = |e: &StoredEvent| {
        if e.aggregate_type == "agency" {
            ReadModel::Agencies
        } else {
            ReadModel::Devices
        }
    };

    let mut one = 0;
    for event in &events {
        let mut tx = schema(pool, "fold_one").await;
        if model(event).apply(&mut tx, event).await.unwrap() == eriop_projections::Outcome::Applied
        {
            one += 1;
        }
        tx.commit().await.unwrap();
    }

    let mut paged = 0;
    for page in case.pages(&events) {
        let mut tx = schema(pool, "fold_paged").await;
        // As the rebuild: model by model, each its share of the page in store order.
        for m in [ReadModel::Agencies, ReadModel::Devices] {
            let share: Vec<&StoredEvent> = events[page.clone()]
                .iter()
                .filter(|e| model(e) == m)
                .collect();
            if !share.is_empty() {
                paged += m.apply_page(&mut tx, &share).await.unwrap();
            }
        }
        tx.commit().await.unwrap();
    }
    (
        (rows(pool, "fold_one").await, one),
        (rows(pool, "fold_paged").await, paged),
    )
}

#[test]
fn a_page_gives_the_rows_of_its_events_one_by_one() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(eriop_tests::db::TestDb::migrated());
    let mut runner = TestRunner::new(Config {
        cases: 96,
        failure_persistence: None,
        ..Config::default()
    });
    let nonempty = std::cell::Cell::new(0);
    runner
        .run(&case(), |case| {
            let ((one, applied_one), (paged, applied_paged)) =
                runtime.block_on(both_ways(&db.pool, &case));
            nonempty.set(nonempty.get() + usize::from(!one.is_empty()));
            prop_assert_eq!(&paged, &one);
            prop_assert_eq!(applied_paged, applied_one);
            Ok(())
        })
        .unwrap();
    // The generator reaches the read model (most cases create rows).
    let nonempty = nonempty.get();
    assert!(nonempty > 48, "only {nonempty} of 96 cases wrote a row");
}
