-- The ledger, index part: one row per index build attempt of the index phase (a skipped
-- valid index and a dropped INVALID leftover get a row too), so `bxbatch status` can show a
-- build in progress and a resume can tell an abandoned build (its client died) from a live one.
-- progress holds the monitor's last sample of pg_stat_progress_create_index (phase, blocks,
-- tuples, epoch seconds), which `status` compares with a fresh sample to compute a rate and ETA.
CREATE TABLE IF NOT EXISTS bxbatch.index_build (
    id bigserial PRIMARY KEY,
    run_id bigint,
    file text NOT NULL,
    idx integer NOT NULL,
    index_name text NOT NULL,
    table_name text NOT NULL,
    action text NOT NULL CHECK (action IN ('build', 'rebuild', 'skip_valid', 'adopt')),
    status text NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'done', 'failed', 'abandoned', 'skipped')),
    attempt integer NOT NULL DEFAULT 1,
    backend_pid integer,
    host text,
    client_pid integer,
    maintenance_work_mem text,
    table_rows_estimate bigint,
    table_bytes bigint,
    index_bytes bigint,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    duration_ms integer,
    waited_ms integer,
    progress jsonb,
    error text
);
CREATE INDEX IF NOT EXISTS index_build_running ON bxbatch.index_build (index_name) WHERE status = 'running';
