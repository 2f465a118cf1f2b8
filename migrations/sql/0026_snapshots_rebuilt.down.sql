-- Nothing to restore: the dropped snapshots were wrong, and the events are all still here.
SELECT 1;
