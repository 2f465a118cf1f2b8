ALTER TABLE agencies DROP COLUMN IF EXISTS mfa_required;
