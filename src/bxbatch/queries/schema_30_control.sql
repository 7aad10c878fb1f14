-- The ledger, live-safety part: the operator's control row per run (pause / continue / cancel /
-- concurrency), each process's throttle state, the throttle's decisions, and the keys that a
-- chunk's bisection isolated as failing for a reason in their data. Idempotent DDL.

-- One row per run, written by `bxbatch pause|continue|cancel|set` from any host and read by
-- every process of the run about twice a second (and at once on NOTIFY bxbatch_control).
CREATE TABLE IF NOT EXISTS bxbatch.control (
    run_id bigint PRIMARY KEY REFERENCES bxbatch.run (id) ON DELETE CASCADE,
    state text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'paused', 'cancelled')),
    concurrency integer CHECK (concurrency IS NULL OR concurrency >= 1),
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text
);

-- The throttle of each process taking part in a run, refreshed with every control poll.
CREATE TABLE IF NOT EXISTS bxbatch.throttle_state (
    run_id bigint NOT NULL REFERENCES bxbatch.run (id) ON DELETE CASCADE,
    host text NOT NULL,
    pid integer NOT NULL,
    concurrency integer NOT NULL,
    max_concurrency integer NOT NULL,
    chunk_scale double precision NOT NULL,
    paused boolean NOT NULL,
    stopping boolean NOT NULL DEFAULT false,
    reason text,
    signals jsonb NOT NULL DEFAULT '[]',
    paused_seconds double precision NOT NULL DEFAULT 0,
    throttled_seconds double precision NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, host, pid)
);

-- Every throttle decision (cut, recover, pause, unpause, stop, set_ceiling) with its reason.
CREATE TABLE IF NOT EXISTS bxbatch.throttle_event (
    id bigserial PRIMARY KEY,
    run_id bigint NOT NULL REFERENCES bxbatch.run (id) ON DELETE CASCADE,
    at timestamptz NOT NULL,
    host text NOT NULL,
    pid integer NOT NULL,
    action text NOT NULL,
    concurrency integer NOT NULL,
    max_concurrency integer NOT NULL,
    chunk_scale double precision NOT NULL,
    paused boolean NOT NULL,
    reason text NOT NULL,
    signals jsonb NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS throttle_event_run ON bxbatch.throttle_event (run_id, id);

-- A key whose row makes its job's chunk SQL fail for a data reason (constraint violation, bad
-- value): isolated by bisecting the failing chunk, recorded here while the job goes on.
CREATE TABLE IF NOT EXISTS bxbatch.failed_key (
    run_id bigint NOT NULL REFERENCES bxbatch.run (id) ON DELETE CASCADE,
    job text NOT NULL,
    seq integer NOT NULL,
    part bigint NOT NULL,
    relname text,
    key bigint NOT NULL,
    chunk_id bigint,
    sqlstate text,
    error text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, job, seq, part, key)
);
