-- A read-only PostgreSQL role for the transcriber database: SELECT on every table and view,
-- also on those that later migrations create, and no INSERT, UPDATE, DELETE, TRUNCATE or
-- CREATE. For dashboards, analysts and `transcriber sql`.
--
-- Run it with psql, connected to the transcriber database as the role that runs
-- `transcriber db upgrade` (the owner of the tables: default privileges belong to the role
-- that creates the objects, so this is what makes future tables and views readable too):
--
--   psql "postgresql://transcriber@db-host/transcriber" -v ON_ERROR_STOP=1 \
--        -v role=analyst -v password="$ANALYST_PASSWORD" -f docs/sql/readonly_role.sql
--
--   role      the new role's name (default: transcriber_readonly)
--   password  its login password (default: none). CREATE/ALTER ROLE send it in clear text,
--             and a server that logs statements writes it to its log; psql's
--             `\password analyst` sets it without that.
--
-- PostgreSQL 15 and newer give no one CREATE on schema public unless granted. Older servers
-- let every role create tables there: on those, also run REVOKE CREATE ON SCHEMA public
-- FROM PUBLIC (after making sure the migrating role owns the schema or holds CREATE itself).
-- Like every role, this one can create TEMPORARY tables of its own session unless
-- REVOKE TEMPORARY ON DATABASE ... FROM PUBLIC says otherwise.
--
-- To remove the role again, in this database: DROP OWNED BY analyst; DROP ROLE analyst;

\set ON_ERROR_STOP on
\if :{?role}
\else
  \set role transcriber_readonly
\endif

BEGIN;

CREATE ROLE :"role" LOGIN;
\if :{?password}
  ALTER ROLE :"role" PASSWORD :'password';
\endif

-- Connect to this database and look up names in its schema.
GRANT CONNECT ON DATABASE :"DBNAME" TO :"role";
GRANT USAGE ON SCHEMA public TO :"role";

-- Every table and view there now (GRANT ... ON TABLES covers views)...
GRANT SELECT ON ALL TABLES IN SCHEMA public TO :"role";

-- ...and every one that the role running this script creates from now on: new tables of a
-- migration, and views that a migration drops and creates again.
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO :"role";

COMMIT;

\echo role :role can now read every table and view of :DBNAME, and write none
