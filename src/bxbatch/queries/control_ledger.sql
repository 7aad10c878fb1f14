-- Named queries on the live-safety ledger tables. Loaded by sqlfiles.queries("control_ledger") in ledger/control.py.

-- name: target_run
-- The run an operator command acts on: the newest one still running (or interrupted).
SELECT id, status, host, pid, settings FROM bxbatch.run
WHERE status IN ('running', 'interrupted')
ORDER BY id DESC
LIMIT 1

-- name: set_control
INSERT INTO bxbatch.control (run_id, state, concurrency, updated_by)
VALUES ($1, coalesce($2, 'running'), $3, $4)
ON CONFLICT (run_id) DO UPDATE
SET state = coalesce($2, bxbatch.control.state),
    concurrency = coalesce($3, bxbatch.control.concurrency),
    updated_at = now(),
    updated_by = $4
RETURNING state, concurrency, knobs, hold_before

-- name: notify_control
SELECT pg_notify('bxbatch_control', $1::text)

-- name: get_control
SELECT state, concurrency, updated_at, updated_by, knobs, hold_before FROM bxbatch.control WHERE run_id = $1

-- name: set_knobs
-- `bxbatch set KEY=VALUE ...`: merged into the run's knobs (concurrency kept in its own column too).
INSERT INTO bxbatch.control (run_id, state, concurrency, knobs, updated_by)
VALUES ($1, 'running', $2, $3::jsonb, $4)
ON CONFLICT (run_id) DO UPDATE
SET knobs = bxbatch.control.knobs || $3::jsonb,
    concurrency = coalesce($2, bxbatch.control.concurrency),
    updated_at = now(),
    updated_by = $4
RETURNING state, concurrency, knobs, hold_before

-- name: set_hold
-- `bxbatch hold-before PHASE` ($2 the phase) / `bxbatch release` ($2 NULL).
INSERT INTO bxbatch.control (run_id, state, hold_before, updated_by)
VALUES ($1, 'running', $2, $3)
ON CONFLICT (run_id) DO UPDATE
SET hold_before = $2, updated_at = now(), updated_by = $3
RETURNING state, concurrency, knobs, hold_before

-- name: reset_cancelled
-- A new attempt: a cancel is spent, and its own --concurrency replaces an earlier `set`; a pause
-- stays (the operator lifts it with `bxbatch continue`).
-- Its knobs (`bxbatch set`) are spent too: the new attempt runs with its own options.
UPDATE bxbatch.control
SET state = CASE WHEN state = 'cancelled' THEN 'running' ELSE state END, concurrency = NULL, knobs = '{}',
    updated_at = now(), updated_by = $2
WHERE run_id = $1 AND (state = 'cancelled' OR concurrency IS NOT NULL OR knobs <> '{}')

-- name: save_throttle_state
INSERT INTO bxbatch.throttle_state (run_id, host, pid, concurrency, max_concurrency, chunk_scale, paused,
                                    stopping, reason, signals, paused_seconds, throttled_seconds, rate_limit, duty,
                                    throttle_on)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12, $13, $14, $15)
ON CONFLICT (run_id, host, pid) DO UPDATE
SET rate_limit = EXCLUDED.rate_limit, duty = EXCLUDED.duty, throttle_on = EXCLUDED.throttle_on,
    concurrency = EXCLUDED.concurrency, max_concurrency = EXCLUDED.max_concurrency,
    chunk_scale = EXCLUDED.chunk_scale, paused = EXCLUDED.paused, stopping = EXCLUDED.stopping,
    reason = EXCLUDED.reason, signals = EXCLUDED.signals, paused_seconds = EXCLUDED.paused_seconds,
    throttled_seconds = EXCLUDED.throttled_seconds, updated_at = now()

-- name: insert_throttle_events
INSERT INTO bxbatch.throttle_event (run_id, at, host, pid, action, concurrency, max_concurrency, chunk_scale,
                                    paused, reason, signals)
SELECT $1, to_timestamp(e.at), $2, $3, e.action, e.concurrency, e.max_concurrency, e.chunk_scale, e.paused,
       e.reason, e.signals
FROM jsonb_to_recordset($4::jsonb) AS e(at float8, action text, concurrency int, max_concurrency int,
                                        chunk_scale float8, paused boolean, reason text, signals jsonb)

-- name: throttle_states
SELECT host, pid, concurrency, max_concurrency, chunk_scale, paused, stopping, reason, signals,
       paused_seconds, throttled_seconds, updated_at, rate_limit, duty, throttle_on,
       updated_at > now() - make_interval(secs => $2) AS live
FROM bxbatch.throttle_state WHERE run_id = $1
ORDER BY updated_at DESC

-- name: recent_throttle_events
SELECT at, host, pid, action, concurrency, max_concurrency, chunk_scale, paused, reason, signals
FROM bxbatch.throttle_event WHERE run_id = $1
ORDER BY id DESC
LIMIT $2

-- name: failed_keys
-- A key fails again in each later pass over it (catch-up, reconcile): show it once, latest error.
SELECT DISTINCT ON (job, part, key) job, seq, part, relname, key, sqlstate, error, recorded_at
FROM bxbatch.failed_key WHERE run_id = $1
ORDER BY job, part, key, recorded_at DESC
LIMIT $2

-- name: count_failed_keys
SELECT count(DISTINCT (job, part, key)) FROM bxbatch.failed_key WHERE run_id = $1

-- name: held_seconds
-- Seconds of the last $2 seconds during which the throttle held the run back (paused counts 1,
-- cut to a fraction f of full speed counts 1 - f), from its decisions: the rate behind the ETA
-- is measured over the remaining, unthrottled time. A process's last state lasts until its last
-- heartbeat; the slowest process counts.
WITH ev AS (
    SELECT e.host, e.pid, e.at, e.paused, e.concurrency, e.max_concurrency, e.chunk_scale,
           least(lead(e.at, 1, now()) OVER w, coalesce(s.updated_at, now()) + interval '1 second') AS until
    FROM bxbatch.throttle_event AS e
    LEFT JOIN bxbatch.throttle_state AS s ON s.run_id = e.run_id AND s.host = e.host AND s.pid = e.pid
    WHERE e.run_id = $1
    WINDOW w AS (PARTITION BY e.host, e.pid ORDER BY e.id)
), clipped AS (
    SELECT host, pid,
           greatest(0, extract(epoch FROM least(until, now()) - greatest(at, now() - make_interval(secs => $2))))
               AS secs,
           CASE WHEN paused THEN 1.0
                ELSE greatest(0.0, 1.0 - concurrency * chunk_scale / greatest(max_concurrency, 1)) END AS held
    FROM ev
    WHERE until > now() - make_interval(secs => $2)
)
SELECT coalesce(max(s), 0)::float8
FROM (SELECT host, pid, sum(secs * held) AS s FROM clipped GROUP BY host, pid) AS per_process

-- name: live_processes
-- Processes of the run whose control loop wrote its throttle state in the last $2 seconds.
SELECT count(*) FROM bxbatch.throttle_state
WHERE run_id = $1 AND updated_at > now() - make_interval(secs => $2)

-- name: control_table_present
SELECT to_regclass('bxbatch.control') IS NOT NULL

-- name: throttle_events_present
SELECT to_regclass('bxbatch.throttle_event') IS NOT NULL

-- name: control_state
SELECT state FROM bxbatch.control WHERE run_id = $1
