-- The backfill engine's ledger tables (job, pass, pass_part, chunk, worker): every read and write,
-- owned by ledger/backfill.py. Loaded by sqlfiles.queries("backfill_ledger").

-- name: insert_job
INSERT INTO bxbatch.job (run_id, name, ord, file_sha256, expected_rows)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (run_id, name) DO NOTHING

-- name: get_job
SELECT run_id, name, ord, file_sha256, status, expected_rows, started_at, finished_at, detail
FROM bxbatch.job WHERE run_id = $1 AND name = $2

-- name: set_job_status
UPDATE bxbatch.job
SET status = $3, updated_at = now(),
    finished_at = CASE WHEN $3 IN ('done', 'failed') THEN now() END,
    detail = detail || $4::jsonb
WHERE run_id = $1 AND name = $2

-- name: get_pass
SELECT seq, kind, round, status FROM bxbatch.pass WHERE run_id = $1 AND job = $2 AND seq = $3

-- name: insert_pass
INSERT INTO bxbatch.pass (run_id, job, seq, kind, round) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (run_id, job, seq) DO NOTHING

-- name: insert_parts
INSERT INTO bxbatch.pass_part (run_id, job, seq, part, relname, lo, hi, planned_upto, est_rows, est_exact)
SELECT $1, $2, $3, p.part, p.relname, p.lo, p.hi, p.lo, p.est, p.exact
FROM unnest($4::bigint[], $5::text[], $6::bigint[], $7::bigint[], $8::bigint[], $9::boolean[])
    AS p (part, relname, lo, hi, est, exact)
ON CONFLICT DO NOTHING

-- name: pass_bounds
SELECT min(lo) AS lo, max(hi) AS hi, count(*) AS parts, coalesce(sum(est_rows), 0)::bigint AS est_rows
FROM bxbatch.pass_part WHERE run_id = $1 AND job = $2 AND seq = $3

-- name: lock_pass
SELECT status FROM bxbatch.pass WHERE run_id = $1 AND job = $2 AND seq = $3 FOR UPDATE

-- name: open_parts
SELECT part, relname, lo, hi, planned_upto, est_rows, est_exact
FROM bxbatch.pass_part
WHERE run_id = $1 AND job = $2 AND seq = $3 AND planned_upto < hi
ORDER BY part
LIMIT $4

-- name: advance_part
UPDATE bxbatch.pass_part SET planned_upto = $5
WHERE run_id = $1 AND job = $2 AND seq = $3 AND part = $4 AND planned_upto <= $5

-- name: insert_chunk
INSERT INTO bxbatch.chunk (run_id, job, seq, parts, los, his, relnames, planned_rows)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)

-- name: set_pass_status
UPDATE bxbatch.pass SET status = $4, finished_at = CASE WHEN $4 = 'done' THEN now() END
WHERE run_id = $1 AND job = $2 AND seq = $3 AND status <> 'done'

-- name: count_pending
SELECT count(*) FROM bxbatch.chunk WHERE run_id = $1 AND job = $2 AND seq = $3 AND status = 'pending'

-- name: claim_chunk
-- Inside the chunk's transaction: the row stays locked until the chunk commits or rolls back.
SELECT id, parts, los, his, relnames, planned_rows
FROM bxbatch.chunk
WHERE run_id = $1 AND job = $2 AND seq = $3 AND status = 'pending'
ORDER BY id
LIMIT 1
FOR UPDATE SKIP LOCKED

-- name: claim_chunk_by_id
-- A retry takes the same chunk again, unless another worker has it (or did it) meanwhile.
SELECT id, parts, los, his, relnames, planned_rows
FROM bxbatch.chunk
WHERE id = $1 AND status = 'pending'
FOR UPDATE SKIP LOCKED

-- name: finish_chunk
UPDATE bxbatch.chunk
SET status = 'done', rows = $2, duration_ms = $3, done_at = now(), worker = $4,
    done_count = done_count + 1, error = NULL
WHERE id = $1 AND status = 'pending'

-- name: note_retry
UPDATE bxbatch.chunk SET retries = retries + 1, error = $2 WHERE id = $1 AND status = 'pending'

-- name: fail_chunk
UPDATE bxbatch.chunk SET status = 'failed', error = $2, retries = retries + 1, worker = $3
WHERE id = $1 AND status = 'pending'

-- name: pass_totals
SELECT coalesce(sum(rows), 0)::bigint AS rows,
       count(*) FILTER (WHERE status = 'done') AS done,
       count(*) FILTER (WHERE status = 'pending') AS pending,
       count(*) FILTER (WHERE status = 'failed') AS failed
FROM bxbatch.chunk WHERE run_id = $1 AND job = $2 AND seq = $3

-- name: reset_failed_chunks
-- On resume: failed chunks get another try, and their passes are reopened.
WITH reset AS (
    UPDATE bxbatch.chunk SET status = 'pending'
    WHERE run_id = $1 AND status = 'failed'
    RETURNING job, seq
)
UPDATE bxbatch.pass AS p SET status = 'planned', finished_at = NULL
FROM (SELECT DISTINCT job, seq FROM reset) AS r
WHERE p.run_id = $1 AND p.job = r.job AND p.seq = r.seq

-- name: tables_to_seed
-- User tables whose rows up to the high-water mark no pass of job $1 has covered since the trigger
-- went in: in this run or any earlier one (a second `bxbatch run` after a completed one must not
-- seed a table twice; a table whose trigger was installed anew, e.g. after a rollback, is seeded
-- again). Passes of earlier runs are complete: an unfinished run is always continued, never replaced.
SELECT ti.table_id, ti.relname, ti.high_water
FROM bxbatch.trigger_install AS ti
WHERE ti.high_water > 0
  AND NOT EXISTS (
      SELECT 1
      FROM bxbatch.pass_part AS pp
      JOIN bxbatch.pass AS p ON p.run_id = pp.run_id AND p.job = pp.job AND p.seq = pp.seq
      WHERE pp.job = $1 AND pp.part = ti.table_id AND p.started_at >= ti.installed_at
        AND ($2::bigint IS NULL OR pp.run_id = $2))  -- $2: only this run's passes count (benchmarks)
ORDER BY ti.table_id

-- name: heartbeat
INSERT INTO bxbatch.worker AS w (run_id, host, pid, idx, job, chunk_id, state, chunks_done, rows_done)
SELECT $1, $2, $3, x.idx, x.job, x.chunk_id, x.state, x.chunks_done, x.rows_done
FROM unnest($4::integer[], $5::text[], $6::bigint[], $7::text[], $8::bigint[], $9::bigint[])
    AS x (idx, job, chunk_id, state, chunks_done, rows_done)
ON CONFLICT (run_id, host, pid, idx) DO UPDATE
SET job = EXCLUDED.job, chunk_id = EXCLUDED.chunk_id, state = EXCLUDED.state,
    chunks_done = EXCLUDED.chunks_done, rows_done = EXCLUDED.rows_done, heartbeat_at = now()

-- name: job_totals
-- Per job of a run: rows, chunks by state, retries, longest chunk, recent throughput.
SELECT j.name, j.ord, j.status, j.expected_rows, j.started_at, j.finished_at, j.detail,
       coalesce(c.rows, 0)::bigint AS rows_done,
       coalesce(c.seed_rows, 0)::bigint AS seed_rows,
       coalesce(c.done, 0)::bigint AS chunks_done,
       coalesce(c.pending, 0)::bigint AS chunks_pending,
       coalesce(c.failed, 0)::bigint AS chunks_failed,
       coalesce(c.retried, 0)::bigint AS chunks_retried,
       coalesce(c.retries, 0)::bigint AS retries,
       coalesce(c.longest_ms, 0)::float8 AS longest_ms,
       coalesce(c.busy_ms, 0)::float8 AS busy_ms,
       coalesce(c.recent_rows, 0)::bigint AS recent_rows,
       c.first_done, c.last_done,
       (SELECT count(*) FROM bxbatch.pass AS p WHERE p.run_id = j.run_id AND p.job = j.name) AS passes
FROM bxbatch.job AS j
LEFT JOIN LATERAL (
    SELECT sum(ch.rows) AS rows,
           sum(ch.rows) FILTER (WHERE p.kind <> 'reconcile') AS seed_rows,
           count(*) FILTER (WHERE ch.status = 'done') AS done,
           count(*) FILTER (WHERE ch.status = 'pending') AS pending,
           count(*) FILTER (WHERE ch.status = 'failed') AS failed,
           count(*) FILTER (WHERE ch.retries > 0) AS retried,
           sum(ch.retries) AS retries,
           max(ch.duration_ms) AS longest_ms,
           sum(ch.duration_ms) AS busy_ms,
           sum(ch.rows) FILTER (WHERE ch.done_at > now() - make_interval(secs => $2) AND p.kind <> 'reconcile')
               AS recent_rows,
           min(ch.done_at) FILTER (WHERE p.kind <> 'reconcile') AS first_done,
           max(ch.done_at) FILTER (WHERE p.kind <> 'reconcile') AS last_done
    FROM bxbatch.chunk AS ch
    JOIN bxbatch.pass AS p ON p.run_id = ch.run_id AND p.job = ch.job AND p.seq = ch.seq
    WHERE ch.run_id = j.run_id AND ch.job = j.name
) AS c ON true
WHERE j.run_id = $1
ORDER BY j.ord

-- name: active_workers
SELECT host, pid, idx, job, chunk_id, state, chunks_done, rows_done, heartbeat_at,
       extract(epoch FROM now() - heartbeat_at)::float8 AS age_s
FROM bxbatch.worker
WHERE run_id = $1 AND heartbeat_at > now() - make_interval(secs => $2) AND state <> 'stopped'
ORDER BY host, pid, idx

-- name: add_expected_rows
-- A per-user-table job learns its expected rows pass by pass (each pass counts its new tables).
UPDATE bxbatch.job SET expected_rows = coalesce(expected_rows, 0) + $3 WHERE run_id = $1 AND name = $2

-- name: record_failed_key
INSERT INTO bxbatch.failed_key (run_id, job, seq, part, relname, key, chunk_id, sqlstate, error)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (run_id, job, seq, part, key) DO UPDATE
SET error = EXCLUDED.error, sqlstate = EXCLUDED.sqlstate, chunk_id = EXCLUDED.chunk_id, recorded_at = now()

-- name: lock_chunk_for_split
SELECT id, run_id, job, seq, parts, los, his, relnames, planned_rows, status
FROM bxbatch.chunk WHERE id = $1
FOR UPDATE

-- name: shrink_chunk
-- Keep the first part of a failing chunk in its own row (still pending), with its error noted.
UPDATE bxbatch.chunk
SET parts = $2, los = $3, his = $4, relnames = $5, planned_rows = $6, retries = retries + 1, error = $7
WHERE id = $1

-- name: insert_split_chunk
INSERT INTO bxbatch.chunk (run_id, job, seq, parts, los, his, relnames, planned_rows, error)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
RETURNING id

-- name: clear_failed_keys
DELETE FROM bxbatch.failed_key WHERE run_id = $1

-- name: failed_key_table_present
SELECT to_regclass('bxbatch.failed_key') IS NOT NULL

-- name: forget_capture
DELETE FROM bxbatch.change_capture WHERE run_id = $1 AND job = $2

-- name: record_capture
INSERT INTO bxbatch.change_capture (run_id, job) VALUES ($1, $2)
ON CONFLICT (run_id, job) DO UPDATE SET started_at = now()

-- name: capture_recorded
SELECT EXISTS (SELECT 1 FROM bxbatch.change_capture WHERE run_id = $1 AND job = $2)

-- name: clear_changed_keys
DELETE FROM bxbatch.changed_key WHERE job = $1

-- name: take_changed_keys
-- Consumed in the transaction that records the pass they feed; a NULL key means "the whole job".
DELETE FROM bxbatch.changed_key WHERE job = $1 RETURNING key

-- name: changed_keys_pending
SELECT EXISTS (SELECT 1 FROM bxbatch.changed_key WHERE job = $1)

-- name: jobs_table_present
SELECT to_regclass('bxbatch.job') IS NOT NULL
