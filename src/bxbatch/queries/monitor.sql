-- Named queries of the index build monitor (monitor.py). Loaded by sqlfiles.queries("monitor").

-- name: progress_sample
-- One backend's row of pg_stat_progress_create_index, with the index and table names.
SELECT p.pid, p.phase, p.command,
       p.lockers_total, p.lockers_done, nullif(p.current_locker_pid, 0) AS current_locker_pid,
       p.blocks_total, p.blocks_done, p.tuples_total, p.tuples_done,
       p.relid::regclass::text AS table_name,
       nullif(p.index_relid, 0)::regclass::text AS index_name,
       extract(epoch FROM clock_timestamp())::float8 AS at
FROM pg_stat_progress_create_index p
WHERE p.pid = $1

-- name: progress_for_index
-- The build (if any) currently running for an index of this database, by index name.
SELECT p.pid, p.phase
FROM pg_stat_progress_create_index p
JOIN pg_class c ON c.oid = p.index_relid
WHERE c.relname = $1 AND c.relnamespace = to_regnamespace($2)
  AND p.datid = (SELECT oid FROM pg_database WHERE datname = current_database())

-- name: build_blockers
-- Who a build (backend $1) is waiting for. pg_blocking_pids() does not report waits on a
-- virtualxid lock, which is how CREATE INDEX CONCURRENTLY waits for older transactions, so
-- this also matches the build's ungranted locks against the granted ones of other backends,
-- takes the progress view's current_locker_pid, and in "waiting for old snapshots" lists the
-- backends of this database whose snapshot (backend_xmin) predates the build's statement.
WITH build AS (
    SELECT p.pid, nullif(p.current_locker_pid, 0) AS current_locker_pid, p.phase, p.datid,
           a.query_start AS build_started
    FROM pg_stat_progress_create_index p
    JOIN pg_stat_activity a ON a.pid = p.pid
    WHERE p.pid = $1
),
lock_waits AS (
    SELECT h.pid, 'lock:' || w.locktype AS reason
    FROM pg_locks w
    JOIN pg_locks h
      ON h.granted AND h.pid IS DISTINCT FROM w.pid
     AND h.locktype = w.locktype
     AND h.database IS NOT DISTINCT FROM w.database
     AND h.relation IS NOT DISTINCT FROM w.relation
     AND h.page IS NOT DISTINCT FROM w.page
     AND h.tuple IS NOT DISTINCT FROM w.tuple
     AND h.virtualxid IS NOT DISTINCT FROM w.virtualxid
     AND h.transactionid IS NOT DISTINCT FROM w.transactionid
     AND h.classid IS NOT DISTINCT FROM w.classid
     AND h.objid IS NOT DISTINCT FROM w.objid
     AND h.objsubid IS NOT DISTINCT FROM w.objsubid
    WHERE w.pid = $1 AND NOT w.granted
),
candidates AS (
    SELECT current_locker_pid AS pid, 'current_locker' AS reason FROM build WHERE current_locker_pid IS NOT NULL
    UNION ALL
    SELECT pid, reason FROM lock_waits
    UNION ALL
    SELECT b, 'blocking_pids' FROM unnest(pg_blocking_pids($1)) AS b
    UNION ALL
    SELECT a.pid, 'old_snapshot'
    FROM pg_stat_activity a, build b
    WHERE b.phase = 'waiting for old snapshots'
      AND a.pid <> b.pid AND a.datid = b.datid
      AND a.backend_xmin IS NOT NULL
      AND a.xact_start < b.build_started
)
SELECT a.pid,
       array_agg(DISTINCT c.reason ORDER BY c.reason) AS reasons,
       a.application_name, a.usename::text AS usename, a.client_addr::text AS client_addr,
       a.state, a.backend_type,
       extract(epoch FROM clock_timestamp() - a.xact_start)::float8 AS xact_age_s,
       a.xact_start, a.query_start, a.wait_event_type, a.wait_event
FROM candidates c
JOIN pg_stat_activity a ON a.pid = c.pid
WHERE c.pid IS NOT NULL AND c.pid <> $1
GROUP BY a.pid, a.application_name, a.usename, a.client_addr, a.state, a.backend_type,
         a.xact_start, a.query_start, a.wait_event_type, a.wait_event
ORDER BY a.xact_start NULLS LAST, a.pid

-- name: backend_lock_wait
-- A build backend with no progress row yet: is it waiting for a lock (its table's)?
SELECT extract(epoch FROM clock_timestamp())::float8 AS at
FROM pg_stat_activity
WHERE pid = $1 AND state = 'active' AND wait_event_type = 'Lock'
