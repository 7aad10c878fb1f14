-- Read-only catalog queries of the preflight checks. Loaded by sqlfiles.queries("preflight").

-- name: base_columns
SELECT c.relname, a.attname
FROM pg_class c
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relnamespace = to_regnamespace($1)
  AND c.relkind IN ('r', 'p')
  AND c.relname = ANY($2::text[])

-- name: role
SELECT current_user AS role, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser

-- name: schema_create
SELECT has_schema_privilege(current_user, $1, 'CREATE')

-- name: ledger_create
-- The bxbatch schema: creatable, or already there and usable by this role.
SELECT CASE
    WHEN to_regnamespace('bxbatch') IS NULL THEN has_database_privilege(current_database(), 'CREATE')
    ELSE has_schema_privilege('bxbatch', 'CREATE') AND has_schema_privilege('bxbatch', 'USAGE')
END

-- name: tables_lacking
-- Tables of $2 (that exist) on which the current role lacks privilege $3.
SELECT c.relname
FROM pg_class c
WHERE c.relnamespace = to_regnamespace($1)
  AND c.relkind IN ('r', 'p')
  AND c.relname = ANY($2::text[])
  AND NOT has_table_privilege(c.oid, $3)
ORDER BY c.relname

-- name: tables_not_owned
SELECT c.relname
FROM pg_class c
WHERE c.relnamespace = to_regnamespace($1)
  AND c.relkind IN ('r', 'p')
  AND c.relname = ANY($2::text[])
  AND NOT pg_has_role(current_user, c.relowner, 'USAGE')
ORDER BY c.relname

-- name: user_tables_not_owned
SELECT count(*)
FROM pg_class c
WHERE c.relnamespace = to_regnamespace($1)
  AND c.relkind IN ('r', 'p')
  AND c.relname = ANY($2::text[])
  AND NOT pg_has_role(current_user, c.relowner, 'USAGE')

-- name: postmaster_start_epoch
SELECT extract(epoch FROM pg_postmaster_start_time())::bigint

-- name: server_addr
SELECT host(inet_server_addr())

-- name: maintenance_work_mem_kb
SELECT setting::bigint * CASE unit WHEN 'kB' THEN 1 WHEN 'MB' THEN 1024 WHEN 'GB' THEN 1048576 ELSE 1 END
FROM pg_settings
WHERE name = 'maintenance_work_mem'

-- name: bxbatch_lock_holders
-- Any bxbatch advisory lock (run, DDL, ledger setup) held by another session in this database.
SELECT DISTINCT a.pid, a.application_name
FROM pg_locks l
JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory'
  AND l.granted
  AND l.classid = $1
  AND l.pid <> pg_backend_pid()
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY a.pid

-- name: long_transactions
-- Transactions in this database older than $1 seconds: CREATE INDEX CONCURRENTLY waits for each.
SELECT pid, usename, coalesce(state, '?') AS state, application_name,
       extract(epoch FROM now() - xact_start) AS age_s
FROM pg_stat_activity
WHERE datname = current_database()
  AND pid <> pg_backend_pid()
  AND backend_type = 'client backend'
  AND xact_start < now() - make_interval(secs => $1)
ORDER BY xact_start

-- name: sees_all_activity
SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
    OR pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER')

-- name: search_path_settings
-- Every search_path set for this database or for all databases, per role or for everyone
-- (ALTER DATABASE / ALTER ROLE ... SET search_path): what the application's sessions start with.
SELECT DISTINCT s.setrole <> 0 AS per_role,
       coalesce((SELECT rolname FROM pg_roles WHERE oid = s.setrole), '') AS role,
       s.setdatabase <> 0 AS per_database,
       substr(cfg, length('search_path=') + 1) AS value
FROM pg_db_role_setting AS s, unnest(s.setconfig) AS cfg
WHERE s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))
  AND cfg LIKE 'search_path=%'
ORDER BY 1, 2, 3, 4

-- name: search_path_boot
SELECT boot_val FROM pg_settings WHERE name = 'search_path'

-- name: search_path_file
-- postgresql.conf's search_path (readable by superusers and pg_read_all_settings only).
SELECT setting FROM pg_file_settings WHERE name = 'search_path' AND applied

-- name: role_schemas
-- Schemas named after a role: what "$user" in a search_path expands to for that role.
SELECT n.nspname FROM pg_namespace AS n JOIN pg_roles AS r ON r.rolname = n.nspname ORDER BY 1

-- name: shadowing_relations
-- Relations in schemas $1 named like a table the migration reads or creates ($2) or like a user
-- table (regex $3).
SELECT n.nspname, c.relname
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = ANY($1::text[])
  AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND (c.relname = ANY($2::text[]) OR c.relname ~ $3)
ORDER BY n.nspname, c.relname

-- name: duplicate_user_table_ids
-- Names of the user-table form ($2, anchored regex) whose digits denote the same table id
-- (database_table_0115 beside database_table_115): the per-table jobs would read both as one.
SELECT (substring(c.relname FROM '[0-9]+$'))::numeric AS table_id, array_agg(c.relname ORDER BY c.relname) AS names
FROM pg_class AS c
WHERE c.relnamespace = to_regnamespace($1)
  AND c.relkind IN ('r', 'p')
  AND c.relname ~ $2
GROUP BY 1
HAVING count(*) > 1
ORDER BY 1

-- name: user_tables_without_integer_id
-- User tables ($2) whose id column is missing or not an integer: keyset chunks walk id.
SELECT c.relname, coalesce(format_type(a.atttypid, a.atttypmod), 'missing') AS id_type
FROM pg_class AS c
LEFT JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attname = 'id' AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relnamespace = to_regnamespace($1)
  AND c.relkind IN ('r', 'p')
  AND c.relname = ANY($2::text[])
  AND (a.atttypid IS NULL OR a.atttypid NOT IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype))
ORDER BY c.relname

-- name: base_column_types
SELECT c.relname, a.attname, a.atttypid::regtype::text AS type
FROM pg_class AS c
JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relnamespace = to_regnamespace($1)
  AND c.relkind IN ('r', 'p')
  AND c.relname = ANY($2::text[])

-- name: connection_room
-- Connection slots bxbatch may still open: the server's (max_connections less the reserved ones
-- and those in use), the database's and the role's own limits (-1: none).
SELECT current_setting('max_connections')::int
         - current_setting('superuser_reserved_connections')::int
         - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int AS server_free,
       current_setting('max_connections')::int AS max_connections,
       (SELECT datconnlimit FROM pg_database WHERE datname = current_database()) AS database_limit,
       (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database())::int AS database_used,
       (SELECT rolconnlimit FROM pg_roles WHERE rolname = current_user) AS role_limit,
       (SELECT count(*) FROM pg_stat_activity WHERE usename = current_user)::int AS role_used
