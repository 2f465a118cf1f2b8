-- An agency may require MFA of all its users (read at login).
ALTER TABLE agencies ADD COLUMN mfa_required boolean NOT NULL DEFAULT false;
