-- What keeping telemetry by the minute in the projector's own transaction would cost
-- PostgreSQL (docs/BENCHMARKS.md, "a rollup measured before it was built"). Run on any
-- PostgreSQL 15+ as a superuser, with nothing else busy:
--
--   psql -h 127.0.0.1 -U postgres -f docs/benchmarks/minutes-cost.sql
--
-- It creates (and leaves) the database eriop_minutes_cost: telemetry shaped as migration
-- 0004's, and a candidate `telemetry_minutes` (one row per device, function, attribute and
-- bin, numeric sum, min, max, latest value). Two shapes of 320,000 samples, written in
-- groups of 4,000, each committed: `bench`, 200 lights x 4 attributes each second (what
-- `make bench` sends: few devices, many samples each), and `fleet`, 4,000 lights x 4
-- attributes each minute (a city: many devices, one sample each per minute). `plain` is
-- the projector's insert as it is; `minutes` adds the rollup upsert in the same statement
-- (RETURNING the stored rows, so a redelivery counts once), with bins of 1 and 5 minutes.
-- Prints the time inside the statements per sample; two rounds, variants alternated.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
DROP DATABASE IF EXISTS eriop_minutes_cost;
CREATE DATABASE eriop_minutes_cost;
\c eriop_minutes_cost
SET client_min_messages = notice;
\ir telemetry-table.sql
CREATE TABLE telemetry_minutes (device_id uuid NOT NULL, function_id text NOT NULL, attribute text NOT NULL,
    minute timestamptz NOT NULL, agency_id uuid NOT NULL, samples bigint NOT NULL, numbers bigint NOT NULL,
    sum numeric NOT NULL, min double precision, max double precision, last_time timestamptz NOT NULL, last_value jsonb,
    PRIMARY KEY (device_id, function_id, attribute, minute, agency_id)) WITH (fillfactor = 80);
CREATE INDEX ON telemetry_minutes (agency_id, minute);

-- shape 'bench': 200 devices x 4 attributes, one sample a second each (400 s)
-- shape 'fleet': 4000 devices x 4 attributes, one sample a minute each (20 min)
CREATE UNLOGGED TABLE source AS
SELECT 'bench'::text AS shape, timestamptz '2026-12-05 00:00:00+00' + make_interval(secs => s) AS time,
       '00000000-0000-0000-0000-000000000001'::uuid AS agency_id,
       ('00000000-0000-0000-0000-' || lpad(to_hex(d), 12, '0'))::uuid AS device_id,
       'lampMonitor001'::text AS function_id,
       (ARRAY['activePower', 'lampVoltage', 'lampCurrent', 'powerFactor'])[a] AS attribute,
       random() * 100 AS value_double, NULL::text AS value_text, NULL::jsonb AS value_json,
       row_number() OVER (ORDER BY s, d, a) AS n
  FROM generate_series(1, 400) s, generate_series(1, 200) d, generate_series(1, 4) a
UNION ALL
SELECT 'fleet', timestamptz '2026-12-05 00:00:00+00' + make_interval(mins => m) + make_interval(secs => d % 60),
       '00000000-0000-0000-0000-000000000001'::uuid,
       ('00000000-0000-0000-0001-' || lpad(to_hex(d), 12, '0'))::uuid,
       'lampMonitor001', (ARRAY['activePower', 'lampVoltage', 'lampCurrent', 'powerFactor'])[a],
       random() * 100, NULL, NULL, row_number() OVER (ORDER BY m, d, a)
  FROM generate_series(1, 20) m, generate_series(1, 4000) d, generate_series(1, 4) a;
CREATE INDEX ON source (shape, n);
ANALYZE source;

CREATE PROCEDURE variant(name text, shape_ text, width interval, per_group int, groups int)
LANGUAGE plpgsql AS $$
DECLARE
  t0 timestamptz; spent interval := '0'; lo bigint;
BEGIN
  TRUNCATE telemetry; TRUNCATE telemetry_minutes;
  COMMIT;
  IF to_regclass('pg_temp.staging') IS NULL THEN
    CREATE TEMP TABLE staging (time timestamptz, agency_id uuid, device_id uuid, function_id text,
      attribute text, value_double double precision, value_text text, value_json jsonb) ON COMMIT DELETE ROWS;
  END IF;
  FOR i IN 0 .. groups - 1 LOOP
    lo := i::bigint * per_group;
    t0 := clock_timestamp();
    INSERT INTO staging SELECT time, agency_id, device_id, function_id, attribute, value_double, value_text, value_json
      FROM source WHERE shape = shape_ AND n > lo AND n <= lo + per_group ORDER BY n;
    IF name = 'plain' THEN
      INSERT INTO telemetry (time, agency_id, device_id, function_id, attribute, value_double, value_text, value_json)
        SELECT * FROM staging;
    ELSE
      WITH stored AS (
        INSERT INTO telemetry (time, agency_id, device_id, function_id, attribute, value_double, value_text, value_json)
        SELECT * FROM staging RETURNING time, agency_id, device_id, function_id, attribute, value_double, value_text, value_json
      ), minutes AS (
        INSERT INTO telemetry_minutes AS m (device_id, function_id, attribute, minute, agency_id, samples, numbers, sum, min, max, last_time, last_value)
        SELECT device_id, function_id, attribute, date_bin(width, time, TIMESTAMPTZ '2000-01-03'), agency_id,
               count(*), count(value_double), coalesce(sum(value_double::numeric), 0), min(value_double), max(value_double), max(time),
               (array_agg(CASE WHEN jsonb_typeof(value_json) = 'boolean' THEN value_json
                   ELSE coalesce(to_jsonb(value_double), to_jsonb(value_text), value_json) END ORDER BY time DESC))[1]
          FROM stored GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (device_id, function_id, attribute, minute, agency_id) DO UPDATE
          SET samples = m.samples + excluded.samples, numbers = m.numbers + excluded.numbers, sum = m.sum + excluded.sum,
              min = least(m.min, excluded.min), max = greatest(m.max, excluded.max),
              last_time = greatest(m.last_time, excluded.last_time),
              last_value = CASE WHEN excluded.last_time > m.last_time THEN excluded.last_value ELSE m.last_value END
      ) SELECT count(*) INTO lo FROM stored;
    END IF;
    COMMIT;
    spent := spent + (clock_timestamp() - t0);
  END LOOP;
  RAISE NOTICE '% % %: % rows in groups of %: % µs a row', rpad(name, 8), shape_, width, per_group * groups, per_group,
    round((extract(epoch FROM spent) * 1e6 / (per_group * groups))::numeric, 2);
END $$;

DO $$
DECLARE v text[];
BEGIN
  FOR round IN 1 .. 2 LOOP
    FOREACH v SLICE 1 IN ARRAY ARRAY[['plain','bench','1 minute'],['minutes','bench','1 minute'],['minutes','bench','5 minutes'],
                                     ['plain','fleet','1 minute'],['minutes','fleet','1 minute'],['minutes','fleet','5 minutes']] LOOP
      CALL variant(v[1], v[2], v[3]::interval, 4000, 80);
    END LOOP;
  END LOOP;
END $$;
