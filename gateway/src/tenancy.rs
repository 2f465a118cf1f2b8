//! Which agency a database transaction acts for (row-level security, migration 0008): the
//! services' shared helpers, in `eriop_nats::db`.

pub use eriop_nats::db::{act_as, begin, lazy_pool, Scope};
