-- The DDL ledger (ddl_file, ddl_statement) and the index builds (index_build): owned by ledger/ddl.py.
-- Loaded by sqlfiles.queries("ddl_ledger").

-- name: insert_build
INSERT INTO bxbatch.index_build
    (run_id, file, idx, index_name, table_name, action, status, attempt, backend_pid, host, client_pid,
     maintenance_work_mem, table_rows_estimate, table_bytes)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
RETURNING id

-- name: finish_build
UPDATE bxbatch.index_build
SET status = $2, finished_at = clock_timestamp(), duration_ms = $3, waited_ms = $4, index_bytes = $5, error = $6
WHERE id = $1

-- name: abandon_builds
-- Builds recorded running whose backend is gone or no longer building: their client died.
UPDATE bxbatch.index_build b
SET status = 'abandoned', finished_at = clock_timestamp(),
    error = coalesce(b.error, 'the bxbatch process running this build stopped before it finished')
WHERE b.status = 'running'
  AND NOT EXISTS (SELECT 1 FROM pg_stat_progress_create_index p WHERE p.pid = b.backend_pid)
RETURNING b.index_name, b.backend_pid

-- name: builds_done
-- The builds of run $1 that finished (the index phase's own and those the backfill phase started early).
SELECT count(*)::int FROM bxbatch.index_build WHERE run_id = $1 AND status = 'done' AND action IN ('build', 'rebuild')

-- name: file_duration
SELECT coalesce(sum(duration_ms), 0)::int FROM bxbatch.ddl_statement WHERE file = $1

-- name: save_progress
UPDATE bxbatch.index_build SET progress = $2::jsonb WHERE id = $1

-- name: builds_in_progress
-- Index builds the ledger says are running, with the live progress row of their backend (if any).
-- A build waiting for its table lock has no progress row yet: its backend's wait says so.
SELECT b.id, b.run_id, b.index_name, b.table_name, b.action, b.attempt, b.backend_pid, b.host,
       b.client_pid, b.started_at, b.table_rows_estimate, b.table_bytes, b.progress AS last_sample,
       extract(epoch FROM clock_timestamp() - b.started_at)::float8 AS running_s,
       coalesce(p.phase, CASE WHEN a.wait_event_type = 'Lock' THEN 'waiting for a lock on the table'
                              ELSE 'starting' END) AS phase,
       p.blocks_total, p.blocks_done, p.tuples_total, p.tuples_done,
       p.lockers_total, p.lockers_done, nullif(p.current_locker_pid, 0) AS current_locker_pid,
       extract(epoch FROM clock_timestamp())::float8 AS at,
       (p.pid IS NOT NULL OR a.state = 'active') AS live
FROM bxbatch.index_build b
LEFT JOIN pg_stat_progress_create_index p ON p.pid = b.backend_pid
LEFT JOIN pg_stat_activity a ON a.pid = b.backend_pid
WHERE b.status = 'running'
ORDER BY b.started_at

-- name: index_ledger_exists
SELECT to_regclass('bxbatch.index_build') IS NOT NULL
-- name: applied_files
SELECT file, sha256, phase, applied_at, duration_ms, run_id FROM bxbatch.ddl_file ORDER BY file

-- name: record_file
INSERT INTO bxbatch.ddl_file (file, sha256, phase, duration_ms, run_id) VALUES ($1, $2, $3, $4, $5)

-- name: applied_statements
SELECT idx, file_sha256 FROM bxbatch.ddl_statement WHERE file = $1

-- name: record_statement
INSERT INTO bxbatch.ddl_statement (file, idx, file_sha256, duration_ms, run_id)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (file, idx) DO NOTHING

-- name: forget_statement
-- Repair: a statement whose object is gone is no longer done; its file is no longer complete.
WITH s AS (DELETE FROM bxbatch.ddl_statement WHERE file = $1 AND idx = $2)
DELETE FROM bxbatch.ddl_file WHERE file = $1

-- name: index_states
SELECT c.relname, i.indisvalid AS valid
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = ANY($2::text[])

-- name: constraint_states
SELECT conname, convalidated FROM pg_constraint
WHERE connamespace = $1::regnamespace AND conname = ANY($2::text[])

-- name: statement_done
SELECT EXISTS (SELECT 1 FROM bxbatch.ddl_file WHERE file = $1)
    OR EXISTS (SELECT 1 FROM bxbatch.ddl_statement WHERE file = $1 AND idx = $2)
