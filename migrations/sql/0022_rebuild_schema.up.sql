-- Online rebuilds (issue 15, item 7): a rebuild replays the event store into shadow copies of
-- the read models here, in short transactions, while readers and the live projections keep
-- using the real tables; then it swaps the rebuilt rows in, in one short transaction.
CREATE SCHEMA eriop_rebuild;
GRANT USAGE, CREATE ON SCHEMA eriop_rebuild TO eriop_app;
