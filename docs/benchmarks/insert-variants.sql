-- How the telemetry projector's insert costs PostgreSQL, variant by variant (docs/BENCHMARKS.md,
-- "a plain insert first"). Run on any PostgreSQL 15+ as a superuser, with nothing else busy:
--
--   psql -h 127.0.0.1 -U postgres -f docs/benchmarks/insert-variants.sql
--
-- It creates (and leaves) the database eriop_insert_variants: a telemetry table shaped as
-- migration 0004's (partitioned by day, natural key, agency index), 320,000 rows of 200
-- lights x 4 attributes x 400 seconds, then writes them in groups of 4,000, each committed,
-- and prints the time inside the statements per row. Each variant runs three times, alternated.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
DROP DATABASE IF EXISTS eriop_insert_variants;
CREATE DATABASE eriop_insert_variants;
\c eriop_insert_variants
SET client_min_messages = notice;
\ir telemetry-table.sql

CREATE UNLOGGED TABLE source AS
SELECT timestamptz '2026-12-05 00:00:00+00' + make_interval(secs => s) AS time,
       '00000000-0000-0000-0000-000000000001'::uuid AS agency_id,
       ('00000000-0000-0000-0000-' || lpad(to_hex(d), 12, '0'))::uuid AS device_id,
       'lampMonitor001'::text AS function_id,
       (ARRAY['activePower', 'lampVoltage', 'lampCurrent', 'powerFactor'])[a] AS attribute,
       random() * 100 AS value_double, NULL::text AS value_text, NULL::jsonb AS value_json,
       row_number() OVER (ORDER BY s, d, a) AS n
  FROM generate_series(1, 400) s, generate_series(1, 200) d, generate_series(1, 4) a;
CREATE INDEX ON source (n);
ANALYZE source;

-- staged-onconflict: the projector until this change (staging table, then ON CONFLICT DO NOTHING)
-- staged-plain:      the projector now (staging table, then a plain INSERT)
-- unnest-plain:      bound arrays instead of the staging table, plain INSERT
-- unnest-onconflict: bound arrays, ON CONFLICT DO NOTHING
CREATE PROCEDURE variant(name text, per_group int, groups int)
LANGUAGE plpgsql AS $$
DECLARE
  t0 timestamptz; spent interval := '0'; lo bigint;
  a1 timestamptz[]; a2 uuid[]; a3 uuid[]; a4 text[]; a5 text[]; a6 float8[]; a7 text[]; a8 jsonb[];
BEGIN
  TRUNCATE telemetry;
  COMMIT;
  IF to_regclass('pg_temp.staging') IS NULL THEN
    CREATE TEMP TABLE staging (time timestamptz, agency_id uuid, device_id uuid, function_id text,
      attribute text, value_double double precision, value_text text, value_json jsonb) ON COMMIT DELETE ROWS;
  END IF;
  FOR i IN 0 .. groups - 1 LOOP
    lo := i::bigint * per_group;
    SELECT array_agg(time ORDER BY n), array_agg(agency_id ORDER BY n), array_agg(device_id ORDER BY n),
           array_agg(function_id ORDER BY n), array_agg(attribute ORDER BY n), array_agg(value_double ORDER BY n),
           array_agg(value_text ORDER BY n), array_agg(value_json ORDER BY n)
      INTO a1, a2, a3, a4, a5, a6, a7, a8 FROM source WHERE n > lo AND n <= lo + per_group;
    t0 := clock_timestamp();
    IF name LIKE 'staged-%' THEN
      INSERT INTO staging SELECT * FROM unnest(a1, a2, a3, a4, a5, a6, a7, a8);
    END IF;
    CASE name
      WHEN 'staged-onconflict' THEN
        INSERT INTO telemetry (time, agency_id, device_id, function_id, attribute, value_double, value_text, value_json)
          SELECT * FROM staging ON CONFLICT (device_id, function_id, attribute, time) DO NOTHING;
      WHEN 'staged-plain' THEN
        INSERT INTO telemetry (time, agency_id, device_id, function_id, attribute, value_double, value_text, value_json)
          SELECT * FROM staging;
      WHEN 'unnest-plain' THEN
        INSERT INTO telemetry (time, agency_id, device_id, function_id, attribute, value_double, value_text, value_json)
          SELECT * FROM unnest(a1, a2, a3, a4, a5, a6, a7, a8);
      WHEN 'unnest-onconflict' THEN
        INSERT INTO telemetry (time, agency_id, device_id, function_id, attribute, value_double, value_text, value_json)
          SELECT * FROM unnest(a1, a2, a3, a4, a5, a6, a7, a8)
          ON CONFLICT (device_id, function_id, attribute, time) DO NOTHING;
    END CASE;
    COMMIT;
    spent := spent + (clock_timestamp() - t0);
  END LOOP;
  RAISE NOTICE '%: % rows in groups of %: % µs a row', rpad(name, 18), per_group * groups, per_group,
    round((extract(epoch FROM spent) * 1e6 / (per_group * groups))::numeric, 2);
END $$;

-- Three rounds, the variants alternated (a procedure may commit when called from a DO block).
DO $$
DECLARE name text;
BEGIN
  FOR round IN 1 .. 3 LOOP
    FOREACH name IN ARRAY ARRAY['staged-onconflict', 'staged-plain', 'unnest-plain', 'unnest-onconflict'] LOOP
      CALL variant(name, 4000, 80);
    END LOOP;
  END LOOP;
END $$;
