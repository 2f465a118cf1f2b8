-- Per-agency quotas (issue 14), beside device_quota: device commands a minute (enforced by the
-- gateway, AgencyCommandQuotaSet) and telemetry messages a second (enforced by each bridge,
-- AgencyTelemetryQuotaSet). NULL: the platform's defaults, ERIOP_AGENCY_COMMANDS_PER_MINUTE
-- and ERIOP_AGENCY_TELEMETRY_PER_SECOND.
ALTER TABLE agencies ADD COLUMN command_quota bigint, ADD COLUMN telemetry_quota bigint;
