-- A function only: the gateway before this migration reads agencies in a transaction.
DROP FUNCTION eriop_agency_suspended(uuid);
