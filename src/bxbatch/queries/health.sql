-- Health signals, read by engine/health.py on its own connection. Loaded by sqlfiles.queries("health").
-- Each query is cheap: pg_stat_activity / pg_stat_replication scans, pg_blocking_pids only for
-- the few sessions that wait on a heavyweight lock. bxbatch's own backends carry an
-- application_name starting with 'bxbatch:' (db.py) and are never counted as "the application".

-- name: snapshot
WITH ours AS (
    SELECT pid FROM pg_stat_activity
    WHERE application_name LIKE 'bxbatch:%' AND datname = current_database()
), blocked AS (
    SELECT a.pid, extract(epoch FROM clock_timestamp() - coalesce(a.query_start, a.state_change)) AS waited_s
    FROM pg_stat_activity a
    WHERE a.wait_event_type = 'Lock'
      AND a.application_name NOT LIKE 'bxbatch:%'
      AND a.pid <> pg_backend_pid()
      AND pg_blocking_pids(a.pid) && ARRAY(SELECT pid FROM ours)
), others AS (
    SELECT a.state, a.xact_start, a.backend_xid, a.backend_xmin, a.datname, a.backend_type
    FROM pg_stat_activity a
    WHERE a.pid <> pg_backend_pid() AND coalesce(a.application_name, '') NOT LIKE 'bxbatch:%'
)
SELECT
    (SELECT count(*) FROM blocked)::bigint AS blocked_sessions,
    (SELECT coalesce(max(waited_s), 0) FROM blocked)::float8 AS blocked_max_s,
    (SELECT coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)), 0) FROM pg_stat_replication)::float8
        AS replication_lag_bytes,
    (SELECT coalesce(max(extract(epoch FROM replay_lag)), 0) FROM pg_stat_replication)::float8 AS replication_lag_s,
    pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8 AS wal_lsn,
    (SELECT coalesce(max(extract(epoch FROM clock_timestamp() - xact_start)), 0) FROM others
     WHERE (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL)
       AND (datname = current_database() OR backend_type = 'walsender'))::float8 AS xmin_age_s,
    (SELECT count(*) FROM others WHERE state = 'active' AND backend_type = 'client backend')::bigint
        AS active_backends,
    current_setting('max_connections')::int AS max_connections,
    pg_is_in_recovery() AS in_recovery
