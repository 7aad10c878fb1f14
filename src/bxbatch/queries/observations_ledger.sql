-- Named queries of the observability part: the time series (bxbatch.sample), the history of
-- runs (live ledger and archive) and the report's data. Loaded by sqlfiles.queries("observations_ledger") in ledger/observations.py.

-- name: insert_samples
INSERT INTO bxbatch.sample (run_id, host, pid, at, phase, concurrency, max_concurrency, chunk_scale, duty,
                            mode, reason, signals, probe_ms, probe_baseline_ms, rows, indexes)
SELECT $1, $2, $3, to_timestamp(s.at), s.phase, s.concurrency, s.max_concurrency, s.chunk_scale, s.duty,
       s.mode, s.reason, coalesce(s.signals, '{}'), s.probe_ms, s.probe_baseline_ms, coalesce(s.rows, '{}'),
       coalesce(s.indexes, '{}')
FROM jsonb_to_recordset($4::jsonb) AS s(at double precision, phase text, concurrency integer, max_concurrency integer,
                                       chunk_scale double precision, duty double precision, mode text, reason text,
                                       signals jsonb, probe_ms double precision, probe_baseline_ms double precision,
                                       rows jsonb, indexes jsonb)
ON CONFLICT DO NOTHING

-- name: save_estimate
INSERT INTO bxbatch.run_estimate (run_id, plan) VALUES ($1, $2::jsonb) ON CONFLICT (run_id) DO NOTHING

-- name: has_estimate
SELECT EXISTS (SELECT 1 FROM bxbatch.run_estimate WHERE run_id = $1)

-- name: save_validation
INSERT INTO bxbatch.validation_result (run_id, ok, result) VALUES ($1, $2, $3::jsonb)

-- name: report_run
SELECT id, status, command, started_at, updated_at, finished_at, bxbatch_version, host, pid, settings, error,
       extract(epoch FROM coalesce(finished_at, updated_at) - started_at) AS seconds
FROM bxbatch.run WHERE id = $1

-- name: report_phases
SELECT name, status, started_at, finished_at, detail,
       extract(epoch FROM coalesce(finished_at, now()) - started_at) AS seconds
FROM bxbatch.phase WHERE run_id = $1 ORDER BY started_at

-- name: report_jobs
-- Per job: rows written by main and catch-up passes, rows changed by settle rounds, chunk durations.
SELECT j.name AS job, j.status, j.expected_rows, j.started_at, j.finished_at,
       coalesce(sum(c.rows) FILTER (WHERE p.kind <> 'reconcile' AND p.round = 0), 0) AS rows,
       coalesce(sum(c.rows) FILTER (WHERE p.kind = 'reconcile' OR p.round > 0), 0) AS reconciled,
       count(c.id) AS chunks,
       count(*) FILTER (WHERE c.status = 'failed') AS failed,
       coalesce(sum(c.retries), 0) AS retries,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY c.duration_ms) AS p50_ms,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY c.duration_ms) AS p90_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY c.duration_ms) AS p99_ms,
       max(c.duration_ms) AS max_ms,
       min(c.done_at - make_interval(secs => c.duration_ms / 1000.0)) AS first_start,
       max(c.done_at) AS last_done
FROM bxbatch.job j
LEFT JOIN bxbatch.chunk c ON c.run_id = j.run_id AND c.job = j.name AND c.status = 'done'
LEFT JOIN bxbatch.pass p ON p.run_id = c.run_id AND p.job = c.job AND p.seq = c.seq
WHERE j.run_id = $1
GROUP BY j.name, j.status, j.expected_rows, j.started_at, j.finished_at, j.ord
ORDER BY j.ord

-- name: report_chunk_times
-- Every committed chunk's end (epoch seconds), duration and rows: the throughput is spread over each
-- chunk's own duration (observability/report.py), so short buckets do not spike at commit times.
SELECT job, extract(epoch FROM done_at)::float8 AS done, duration_ms, rows
FROM bxbatch.chunk
WHERE run_id = $1 AND status = 'done' AND done_at IS NOT NULL AND rows > 0
ORDER BY done_at

-- name: report_chunk_durations
-- At most $2 chunk durations per job, evenly spread over the job's chunks (for the distribution).
SELECT job, array_agg(duration_ms ORDER BY id) AS ms
FROM (SELECT job, id, duration_ms, row_number() OVER (PARTITION BY job ORDER BY id) AS n,
             count(*) OVER (PARTITION BY job) AS total
      FROM bxbatch.chunk WHERE run_id = $1 AND status = 'done' AND duration_ms IS NOT NULL) c
WHERE (n - 1) % greatest(1, ceil(total::numeric / $2)::int) = 0
GROUP BY job

-- name: report_events
SELECT at, host, pid, action, concurrency, max_concurrency, chunk_scale, paused, reason, signals
FROM bxbatch.throttle_event WHERE run_id = $1 ORDER BY host, pid, at, id

-- name: report_samples
SELECT host, pid, at, phase, concurrency, max_concurrency, chunk_scale, duty, mode, reason, signals, probe_ms,
       probe_baseline_ms, rows, indexes
FROM bxbatch.sample WHERE run_id = $1 ORDER BY host, pid, at

-- name: report_index_builds
SELECT index_name, table_name, action, status, started_at, finished_at, duration_ms, waited_ms, attempt
FROM bxbatch.index_build WHERE run_id = $1 ORDER BY started_at

-- name: report_constraint_statements
SELECT s.file, s.idx, s.applied_at, s.duration_ms
FROM bxbatch.ddl_statement s JOIN bxbatch.ddl_file f USING (file)
WHERE s.run_id = $1 AND f.phase = 'constraints' ORDER BY s.applied_at

-- name: report_estimate
SELECT plan FROM bxbatch.run_estimate WHERE run_id = $1

-- name: report_validation
SELECT checked_at, ok, result FROM bxbatch.validation_result WHERE run_id = $1 ORDER BY checked_at DESC LIMIT 1

-- name: history_runs
SELECT r.id, r.status, r.command, r.host, r.pid, r.started_at, r.finished_at, r.updated_at, r.bxbatch_version,
       extract(epoch FROM coalesce(r.finished_at, r.updated_at) - r.started_at) AS seconds,
       (SELECT coalesce(sum(c.rows), 0) FROM bxbatch.chunk c JOIN bxbatch.pass p USING (run_id, job, seq)
        WHERE c.run_id = r.id AND c.status = 'done' AND p.kind <> 'reconcile' AND p.round = 0) AS rows,
       (SELECT string_agg(DISTINCT t.host, ',') FROM bxbatch.throttle_state t WHERE t.run_id = r.id) AS hosts,
       r.error
FROM bxbatch.run r ORDER BY r.id

-- name: rollback_steps_done
SELECT count(*) AS steps, min(done_at) AS first, max(done_at) AS last FROM bxbatch.rollback_step

-- name: archive_ensure
CREATE SCHEMA IF NOT EXISTS bxbatch_history;
CREATE TABLE IF NOT EXISTS bxbatch_history.run (
    id bigint PRIMARY KEY,
    archived_at timestamptz NOT NULL DEFAULT now(),
    summary jsonb NOT NULL,
    report jsonb NOT NULL
);
CREATE TABLE IF NOT EXISTS bxbatch_history.rollback (
    id bigserial PRIMARY KEY,
    started_at timestamptz,
    finished_at timestamptz NOT NULL DEFAULT now(),
    host text NOT NULL,
    pid integer NOT NULL,
    steps integer NOT NULL,
    runs_archived integer NOT NULL
);

-- name: archive_run
INSERT INTO bxbatch_history.run (id, summary, report) VALUES ($1, $2::jsonb, $3::jsonb)
ON CONFLICT (id) DO UPDATE SET summary = EXCLUDED.summary, report = EXCLUDED.report, archived_at = now()

-- name: archive_rollback
INSERT INTO bxbatch_history.rollback (started_at, host, pid, steps, runs_archived) VALUES ($1, $2, $3, $4, $5)

-- name: archived_runs
SELECT id, archived_at, summary FROM bxbatch_history.run ORDER BY id

-- name: archived_report
SELECT report FROM bxbatch_history.run WHERE id = $1

-- name: archived_rollbacks
SELECT id, started_at, finished_at, host, pid, steps, runs_archived FROM bxbatch_history.rollback ORDER BY id

-- name: history_runs_bare
-- A ledger older than chunks and throttle states: the runs alone, no row totals.
SELECT id, status, command, host, started_at, finished_at, bxbatch_version, error, 0 AS rows,
       NULL::text AS hosts, extract(epoch FROM coalesce(finished_at, updated_at) - started_at) AS seconds
FROM bxbatch.run ORDER BY id
