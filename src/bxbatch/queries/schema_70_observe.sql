-- The ledger, observability part: the run's time series, one row per sample of each process
-- (engine/observability/timeseries.py): the throttle's state and signal readings, probe latency,
-- rows written by this process per job, index builds in progress. Bounded: one sample a second
-- for the first hour of a process's attempt, then one per (elapsed / 3600) seconds, so a day-long
-- run keeps ~15,000 rows per process. Written in batches every few seconds off the hot path.
CREATE TABLE IF NOT EXISTS bxbatch.sample (
    run_id bigint NOT NULL REFERENCES bxbatch.run (id) ON DELETE CASCADE,
    host text NOT NULL,
    pid integer NOT NULL,
    at timestamptz NOT NULL,
    phase text,
    concurrency integer,
    max_concurrency integer,
    chunk_scale double precision,
    duty double precision,
    mode text,
    reason text,
    signals jsonb NOT NULL DEFAULT '{}',
    probe_ms double precision,
    probe_baseline_ms double precision,
    rows jsonb NOT NULL DEFAULT '{}',
    indexes jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, host, pid, at)
);

-- After a rollback the ledger is recreated empty: run ids continue after the archived runs'
-- (bxbatch_history.run, written by rollback), so `bxbatch report --run N` names one run.
DO $$
BEGIN
    IF to_regclass('bxbatch_history.run') IS NOT NULL THEN
        PERFORM setval('bxbatch.run_id_seq',
                       greatest((SELECT max(id) FROM bxbatch_history.run),
                                (SELECT last_value FROM bxbatch.run_id_seq), 1));
    END IF;
END
$$;

-- What `bxbatch plan` estimated when the run started (per phase and per backfill job), for the
-- report's "estimate vs actual"; and the validation phase's full result (also when it failed).
CREATE TABLE IF NOT EXISTS bxbatch.run_estimate (
    run_id bigint PRIMARY KEY REFERENCES bxbatch.run (id) ON DELETE CASCADE,
    taken_at timestamptz NOT NULL DEFAULT now(),
    plan jsonb NOT NULL
);

CREATE TABLE IF NOT EXISTS bxbatch.validation_result (
    run_id bigint NOT NULL REFERENCES bxbatch.run (id) ON DELETE CASCADE,
    checked_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    ok boolean NOT NULL,
    result jsonb NOT NULL,
    PRIMARY KEY (run_id, checked_at)
);
