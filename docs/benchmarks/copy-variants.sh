#!/usr/bin/env bash
# How the telemetry projector's new rows cost PostgreSQL, staged or copied straight in
# (docs/BENCHMARKS.md, "COPY straight into telemetry"). Run on any PostgreSQL 15+ as a
# superuser, with nothing else busy:
#
#   bash docs/benchmarks/copy-variants.sh [psql connection options, e.g. -h 127.0.0.1 -U postgres]
#
# It creates (and leaves) the database eriop_copy_variants: telemetry as on plain PostgreSQL
# (partitioned by day, natural key, row-level security forced, as migrations 0004, 0011 and
# 0032 leave it), a role bound by the policies (as eriop_app) and one that bypasses them and
# may only insert (as eriop_telemetry_writer, migration 0034). Then 40 groups of 7,200 rows
# (200 lights x 4 attributes x 9 seconds, in key order), each group its own transaction:
#   staged: COPY into a temporary table, then INSERT ... SELECT (the projector before)
#   direct: COPY straight into telemetry as the writer (the projector now)
# three rounds, alternated; prints the wall time per row of each run.
set -euo pipefail
psql=(psql -q -v ON_ERROR_STOP=1 "$@")
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"${psql[@]}" -d postgres -c "DROP DATABASE IF EXISTS eriop_copy_variants" -c "CREATE DATABASE eriop_copy_variants"
db=("${psql[@]}" -d eriop_copy_variants)
"${db[@]}" <<'SQL'
CREATE TABLE telemetry (time timestamptz NOT NULL, agency_id uuid NOT NULL, device_id uuid NOT NULL,
  function_id text NOT NULL, attribute text NOT NULL, value_double double precision, value_text text,
  value_json jsonb, received_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (device_id, function_id, attribute, time)) PARTITION BY RANGE (time);
CREATE TABLE telemetry_default PARTITION OF telemetry DEFAULT;
CREATE TABLE telemetry_20261205 PARTITION OF telemetry FOR VALUES FROM ('2026-12-05') TO ('2026-12-06');
ALTER TABLE telemetry ENABLE ROW LEVEL SECURITY;
ALTER TABLE telemetry FORCE ROW LEVEL SECURITY;
CREATE POLICY agency_isolation ON telemetry
  USING (current_setting('eriop.all_agencies', true) = 'on'
         OR agency_id = nullif(current_setting('eriop.agency_id', true), '')::uuid)
  WITH CHECK (current_setting('eriop.all_agencies', true) = 'on'
         OR agency_id = nullif(current_setting('eriop.agency_id', true), '')::uuid);
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'copy_variants_app') THEN
    CREATE ROLE copy_variants_app NOLOGIN NOBYPASSRLS; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'copy_variants_writer') THEN
    CREATE ROLE copy_variants_writer NOLOGIN BYPASSRLS; END IF;
END $$;
GRANT ALL ON telemetry TO copy_variants_app;
GRANT INSERT ON telemetry TO copy_variants_writer;
SQL
cols="time, agency_id, device_id, function_id, attribute, value_double, value_text, value_json"
for g in $(seq -w 0 39); do
  "${db[@]}" -c "\\copy (SELECT timestamptz '2026-12-05 00:00:00+00' + make_interval(secs => $((10#$g)) * 9 + s) + make_interval(secs => d / 1000.0), '00000000-0000-0000-0000-000000000001'::uuid, ('00000000-0000-0000-0000-' || lpad(to_hex(d), 12, '0'))::uuid, 'lampMonitor001', a, random() * 100, NULL, NULL FROM generate_series(1, 200) d, unnest(ARRAY['activePower', 'lampCurrent', 'lampVoltage', 'powerFactor']) a, generate_series(0, 8) s ORDER BY d, a, s) TO '$dir/g$g.tsv'"
done
script() {
  if [ "$1" = staged ]; then
    echo "SET ROLE copy_variants_app; SET eriop.all_agencies = 'on';"
    echo "CREATE TEMP TABLE staging ($cols) AS SELECT $cols FROM telemetry WITH NO DATA;"
  else
    echo "SET ROLE copy_variants_writer;"
  fi
  for g in $(seq -w 0 39); do
    echo "BEGIN;"
    if [ "$1" = staged ]; then
      echo "\\copy staging ($cols) FROM '$dir/g$g.tsv'"
      echo "INSERT INTO telemetry ($cols) SELECT $cols FROM staging; TRUNCATE staging;"
    else
      echo "\\copy telemetry ($cols) FROM '$dir/g$g.tsv'"
    fi
    echo "COMMIT;"
  done
}
script staged >"$dir/staged.sql"
script direct >"$dir/direct.sql"
for round in 1 2 3; do
  for variant in staged direct; do
    "${db[@]}" -c "TRUNCATE telemetry" -c "CHECKPOINT"
    start=$(date +%s%N)
    "${db[@]}" -f "$dir/$variant.sql" >/dev/null
    end=$(date +%s%N)
    echo "round $round, $variant: $(( (end - start) / 288000 / 1000 )).$(( (end - start) / 288000 % 1000 / 100 )) µs a row"
  done
done
