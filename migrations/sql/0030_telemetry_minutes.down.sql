DROP TABLE telemetry_touched;
DROP TABLE telemetry_minutes;
