-- A function only: the gateway before this migration asks the same in a transaction.
DROP FUNCTION eriop_caller_standing(uuid, uuid);
