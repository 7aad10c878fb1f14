-- Named queries of the index phase (phases/indexes.py). Loaded by sqlfiles.queries("indexes").

-- name: index_state
-- An index by name: its validity, and whether a CREATE INDEX is building it right now.
SELECT c.oid, i.indisvalid, i.indisready,
       EXISTS (SELECT 1 FROM pg_stat_progress_create_index p WHERE p.index_relid = c.oid) AS building
FROM pg_class c
JOIN pg_index i ON i.indexrelid = c.oid
WHERE c.relname = $1 AND c.relnamespace = to_regnamespace($2)

-- name: table_size
SELECT c.reltuples::bigint AS rows_estimate, pg_table_size(c.oid) AS bytes
FROM pg_class c
WHERE c.relname = $1 AND c.relnamespace = to_regnamespace($2)

-- name: index_bytes
SELECT pg_relation_size(c.oid)
FROM pg_class c
WHERE c.relname = $1 AND c.relnamespace = to_regnamespace($2)

-- name: old_transactions
-- Other client sessions of this database (not bxbatch's) in a transaction open longer than $1 seconds, or
-- idle in one (of any age: it waits on its client, for as long as the client likes): a CONCURRENTLY build
-- started now would wait for them before it completes (not for autovacuum).
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
  AND (xact_start < now() - make_interval(secs => $1) OR state LIKE 'idle in transaction%')
  AND (backend_xmin IS NOT NULL OR backend_xid IS NOT NULL)
  AND coalesce(application_name, '') NOT LIKE 'bxbatch%'
