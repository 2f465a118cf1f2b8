#!/bin/sh
# Run once by the TimescaleDB image when it creates the database (docker-entrypoint-initdb.d).
# Least privilege: the services log in as eriop_service, which is neither superuser nor owner
# nor BYPASSRLS, and holds only what the role eriop_app is granted (migration 0008); only the
# migrate step connects as the owner (POSTGRES_USER).
set -eu
password=$(cat /run/secrets/db_service_password)
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v password="$password" <<'SQL'
CREATE ROLE eriop_app NOLOGIN NOSUPERUSER NOBYPASSRLS;
CREATE ROLE eriop_service LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE
  PASSWORD :'password' IN ROLE eriop_app;
SQL
