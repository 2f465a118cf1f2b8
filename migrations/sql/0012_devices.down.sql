DROP TABLE IF EXISTS device_latest;
DROP TABLE IF EXISTS device_activity;
DROP TABLE IF EXISTS device_commands;
DROP SEQUENCE IF EXISTS device_command_ids;
DROP TABLE IF EXISTS device_identities;
DROP TABLE IF EXISTS devices;
DROP TABLE IF EXISTS device_classes;
