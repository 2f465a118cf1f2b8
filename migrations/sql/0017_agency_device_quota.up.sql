-- Per-agency quotas (issue 14): the most live devices an agency may have, set by a platform
-- administrator (AgencyDeviceQuotaSet). NULL: the platform's default, ERIOP_AGENCY_DEVICE_QUOTA.
ALTER TABLE agencies ADD COLUMN device_quota bigint;
