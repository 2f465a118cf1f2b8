-- Counters only (no history lives here): dropping them loses nothing the audit trail holds.
DROP TABLE login_failures_unknown;
