//! PostgreSQL's binary COPY format (the `COPY ... FROM STDIN (FORMAT binary)` wire layout:
//! header, then per row a field count and each field as length + bytes, then a trailer).
//! The values themselves are encoded by `postgres-types` (rust-postgres' own encoders);
//! only the framing is written here, so telemetry goes through the service's one sqlx pool
//! (its TLS and row-level-security settings) rather than a second client.

use bytes::{BufMut, BytesMut};
use postgres_types::{IsNull, ToSql, Type};

use super::Row;

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// The columns of the staging table, in this order.
pub const COLUMNS: &str =
    "time, agency_id, device_id, function_id, attribute, value_double, value_text, value_json";

#[derive(Debug, thiserror::Error)]
#[error("cannot encode a telemetry value: {0}")]
pub struct EncodeError(String);

pub fn encode(rows: &[&Row]) -> Result<BytesMut, EncodeError> {
    let mut out = BytesMut::with_capacity(19 + rows.len() * 160);
    out.put_slice(SIGNATURE);
    out.put_i32(0); // flags
    out.put_i32(0); // header extension length
    for row in rows {
        out.put_i16(8);
        field(&mut out, &row.time, &Type::TIMESTAMPTZ)?;
        field(&mut out, &row.agency_id, &Type::UUID)?;
        field(&mut out, &row.device_id, &Type::UUID)?;
        field(&mut out, &row.function_id, &Type::TEXT)?;
        field(&mut out, &row.attribute, &Type::TEXT)?;
        field(&mut out, &row.value_double, &Type::FLOAT8)?;
        field(&mut out, &row.value_text, &Type::TEXT)?;
        field(&mut out, &row.value_json, &Type::JSONB)?;
    }
    out.put_i16(-1);
    Ok(out)
}

fn field(out: &mut BytesMut, value: &(dyn ToSql + Sync), ty: &Type) -> Result<(), EncodeError> {
    let at = out.len();
    out.put_i32(0); // length, filled in below
    match value
        .to_sql_checked(ty, out)
        .map_err(|e| EncodeError(e.to_string()))?
    {
        IsNull::Yes => {
            out.truncate(at);
            out.put_i32(-1);
        }
        IsNull::No => {
            let len = i32::try_from(out.len() - at - 4).map_err(|e| EncodeError(e.to_string()))?;
            out[at..at + 4].copy_from_slice(&len.to_be_bytes());
        }
    }
    Ok(())
}
