//! Where PostgreSQL's time goes during the saturation run: `pg_stat_statements` (a contrib
//! module of PostgreSQL itself, loaded by the benchmark's cluster), reset before the run and
//! read after it. The times are the statements' own (executor time: CPU and the waits inside
//! a statement; a `COMMIT`'s time is its WAL flush).

use sqlx::PgPool;

/// One normalized statement (its constants shown as `$n`) and what it cost during the run.
pub struct Statement {
    pub query: String,
    pub calls: i64,
    pub rows: i64,
    pub total_ms: f64,
}

/// Statements shown in the report; the rest are summed into the total.
const SHOWN: i64 = 10;

/// Starts counting from zero (creates the extension in the benchmark's database once).
/// Answers whether statements are counted: a PostgreSQL without its contrib modules has none,
/// and the run goes on without the table.
pub async fn reset(db: &PgPool) -> bool {
    let created = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(db)
        .await;
    if let Err(e) = created {
        eprintln!("bench: no statement profile (pg_stat_statements: {e})");
        return false;
    }
    sqlx::query("SELECT pg_stat_statements_reset()")
        .execute(db)
        .await
        .is_ok()
}

/// The costliest statements since [`reset`], and the total time of every statement.
pub async fn read(db: &PgPool) -> (Vec<Statement>, f64) {
    // One line per statement text: a statement on a temporary table (the projector's
    // staging) is counted apart on each connection, its table being another there.
    let top: Vec<(String, i64, i64, f64)> = sqlx::query_as(
        "SELECT regexp_replace(query, '\\s+', ' ', 'g'), sum(calls)::int8, sum(rows)::int8,
                sum(total_exec_time)::float8
           FROM pg_stat_statements
          WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
          GROUP BY 1 ORDER BY 4 DESC LIMIT $1",
    )
    .bind(SHOWN)
    .fetch_all(db)
    .await
    .unwrap_or_default();
    let total: f64 = sqlx::query_scalar(
        "SELECT coalesce(sum(total_exec_time), 0)::float8 FROM pg_stat_statements
          WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(db)
    .await
    .unwrap_or(0.0);
    let statements = top
        .into_iter()
        .map(|(query, calls, rows, total_ms)| Statement {
            query,
            calls,
            rows,
            total_ms,
        })
        .collect();
    (statements, total)
}
