DROP TABLE IF EXISTS agencies;
DROP TABLE IF EXISTS projection_checkpoints;
