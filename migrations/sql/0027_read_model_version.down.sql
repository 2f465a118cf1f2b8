DROP FUNCTION IF EXISTS eriop_read_model_version(text, uuid);
