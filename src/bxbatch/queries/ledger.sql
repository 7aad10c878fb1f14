-- Named queries on the ledger's core tables (runs, phases, DDL). Loaded by sqlfiles.queries("ledger").

-- name: ledger_exists
-- The schema, not one table: a ledger with a table dropped by hand is damaged, not absent (ledger.repair).
SELECT to_regnamespace('bxbatch') IS NOT NULL

-- name: unfinished_run
SELECT id, status, command, started_at, updated_at, host, pid
FROM bxbatch.run
WHERE status IN ('running', 'interrupted', 'completed_with_failures')  -- resume retries failed keys
ORDER BY id DESC
LIMIT 1

-- name: last_run
SELECT id, status, command, started_at, updated_at, finished_at, host, pid, error, settings, owned_since
FROM bxbatch.run
ORDER BY id DESC
LIMIT 1

-- name: insert_run
INSERT INTO bxbatch.run (command, bxbatch_version, host, pid, settings)
VALUES ($1, $2, $3, $4, $5::jsonb)
RETURNING id

-- name: set_run_status
UPDATE bxbatch.run
SET status = $2,
    updated_at = now(),
    finished_at = CASE WHEN $2 IN ('completed', 'completed_with_failures', 'failed') THEN now() END,
    error = $3
WHERE id = $1

-- name: phase_status
SELECT name, status, started_at, finished_at, detail FROM bxbatch.phase WHERE run_id = $1

-- name: start_phase
INSERT INTO bxbatch.phase (run_id, name, status)
VALUES ($1, $2, 'running')
ON CONFLICT (run_id, name) DO UPDATE SET status = 'running', finished_at = NULL

-- name: finish_phase
UPDATE bxbatch.phase SET status = $3, finished_at = now(), detail = $4::jsonb
WHERE run_id = $1 AND name = $2

-- name: lock_holder
SELECT a.pid, a.application_name, a.client_addr::text AS client_addr, a.backend_start
FROM pg_locks l
JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1 AND l.objid = $2
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
LIMIT 1

-- name: ledger_tables_present
SELECT c.relname FROM pg_class AS c
WHERE c.relnamespace = to_regnamespace('bxbatch') AND c.relkind IN ('r', 'p') AND c.relname = ANY($1::text[])

-- name: owner_lock_held
-- The run's owner holds a session advisory lock (class $1, the run id) for as long as it lives.
SELECT EXISTS (
    SELECT 1 FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND classid = $1 AND objid = $2::oid AND objsubid = 2
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
)

-- name: last_heartbeat
-- Seconds since any process of the run last showed life: the run row, a throttle state, a worker.
SELECT extract(epoch FROM now() - greatest(
    (SELECT updated_at FROM bxbatch.run WHERE id = $1),
    (SELECT max(updated_at) FROM bxbatch.throttle_state WHERE run_id = $1),
    (SELECT max(heartbeat_at) FROM bxbatch.worker WHERE run_id = $1)))::float8 AS age_s

-- name: take_ownership
UPDATE bxbatch.run SET status = 'running', updated_at = now(), host = $2, pid = $3, owned_since = now(),
    finished_at = NULL, error = NULL
WHERE id = $1

-- name: run_by_id
SELECT id, status, command, started_at, updated_at, finished_at, host, pid, error, settings, owned_since
FROM bxbatch.run WHERE id = $1

-- name: worker_table_present
SELECT to_regclass('bxbatch.worker') IS NOT NULL

-- name: live_workers
-- Workers of another process (not host $1 / pid $2) whose heartbeat is fresher than $3 seconds:
-- a run in progress, possibly on another host.
SELECT host, pid, count(*) AS workers, max(heartbeat_at) AS last_beat
FROM bxbatch.worker
WHERE state <> 'stopped'
  AND heartbeat_at > now() - make_interval(secs => $3)
  AND NOT (host = $1 AND pid = $2)
GROUP BY host, pid
ORDER BY host, pid

-- name: run_running
SELECT EXISTS (SELECT 1 FROM bxbatch.run WHERE status = 'running')

-- name: run_table_present
SELECT to_regclass('bxbatch.run') IS NOT NULL
