-- Nothing to undo: the rows added are what the ingest would have written, and 0032's down
-- brings back the index that the retention job read before.
SELECT 1;
