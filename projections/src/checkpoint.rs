//! Where each projection is in its stream: saved in the same transaction as the rows it
//! wrote, so a crash between the two cannot happen; a redelivered message below the
//! checkpoint never moves it back.

use sqlx::PgConnection;

/// Records that `projection` applied its stream up to `stream_sequence` (never backwards).
pub async fn save(
    conn: &mut PgConnection,
    projection: &str,
    stream_sequence: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO projection_checkpoints (projection, stream_sequence, updated_at)
         VALUES ($1, $2, now())
         ON CONFLICT (projection) DO UPDATE
            SET stream_sequence = greatest(projection_checkpoints.stream_sequence, excluded.stream_sequence),
                updated_at = now()",
    )
    .bind(projection)
    .bind(i64::try_from(stream_sequence).unwrap_or(i64::MAX))
    .execute(conn)
    .await?;
    Ok(())
}
