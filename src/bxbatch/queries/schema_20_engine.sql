-- The ledger, engine part: backfill jobs, their passes, the key domain of each pass (parts),
-- the chunks (half-open key ranges) and the workers' heartbeats. Idempotent DDL.
--
-- A job runs as a sequence of passes (seq 0, 1, ...): the main pass, catch-up passes over keys
-- that appeared after the previous pass's bound, then settle rounds of catch-up + reconcile
-- passes. A pass covers one or more parts (one per user table for activity_seed, part 0
-- otherwise), each a key domain (lo, hi]. The planner cuts every part into consecutive ranges
-- and records how far it got (planned_upto), so planning resumes where it stopped. A chunk is
-- one or more segments (parts[i], los[i], his[i]]: tiny user tables share a chunk.
CREATE TABLE IF NOT EXISTS bxbatch.job (
    run_id bigint NOT NULL REFERENCES bxbatch.run (id) ON DELETE CASCADE,
    name text NOT NULL,
    ord integer NOT NULL,
    file_sha256 text NOT NULL,
    status text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'settling', 'done', 'failed')),
    expected_rows bigint,
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    detail jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, name)
);

CREATE TABLE IF NOT EXISTS bxbatch.pass (
    run_id bigint NOT NULL,
    job text NOT NULL,
    seq integer NOT NULL,
    kind text NOT NULL CHECK (kind IN ('main', 'catchup', 'reconcile')),
    round integer NOT NULL DEFAULT 0,
    status text NOT NULL DEFAULT 'planning' CHECK (status IN ('planning', 'planned', 'done')),
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    PRIMARY KEY (run_id, job, seq),
    FOREIGN KEY (run_id, job) REFERENCES bxbatch.job (run_id, name) ON DELETE CASCADE
);

CREATE TABLE IF NOT EXISTS bxbatch.pass_part (
    run_id bigint NOT NULL,
    job text NOT NULL,
    seq integer NOT NULL,
    part bigint NOT NULL,
    relname text,
    lo bigint NOT NULL,
    hi bigint NOT NULL,
    planned_upto bigint NOT NULL,
    est_rows bigint,
    est_exact boolean NOT NULL DEFAULT false,
    PRIMARY KEY (run_id, job, seq, part),
    FOREIGN KEY (run_id, job, seq) REFERENCES bxbatch.pass (run_id, job, seq) ON DELETE CASCADE,
    CHECK (lo <= planned_upto AND planned_upto <= hi)
);

-- The planner's next parts: only those not fully planned (thousands of user tables per pass).
CREATE INDEX IF NOT EXISTS pass_part_open ON bxbatch.pass_part (run_id, job, seq, part) WHERE planned_upto < hi;

CREATE TABLE IF NOT EXISTS bxbatch.chunk (
    id bigserial PRIMARY KEY,
    run_id bigint NOT NULL,
    job text NOT NULL,
    seq integer NOT NULL,
    parts bigint[] NOT NULL,
    los bigint[] NOT NULL,
    his bigint[] NOT NULL,
    relnames text[],
    planned_rows bigint NOT NULL,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'failed')),
    rows bigint,
    duration_ms double precision,
    done_count integer NOT NULL DEFAULT 0,
    retries integer NOT NULL DEFAULT 0,
    error text,
    worker text,
    planned_at timestamptz NOT NULL DEFAULT now(),
    done_at timestamptz,
    FOREIGN KEY (run_id, job, seq) REFERENCES bxbatch.pass (run_id, job, seq) ON DELETE CASCADE,
    CHECK (cardinality(parts) >= 1 AND cardinality(parts) = cardinality(los)
           AND cardinality(los) = cardinality(his))
);
-- A range is planned once: two planners can never both write a chunk starting at the same key.
CREATE UNIQUE INDEX IF NOT EXISTS chunk_first_segment_key
    ON bxbatch.chunk (run_id, job, seq, (parts[1]), (los[1]));
CREATE INDEX IF NOT EXISTS chunk_pending ON bxbatch.chunk (run_id, job, seq, id) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS chunk_done_at ON bxbatch.chunk (run_id, job, done_at) WHERE status = 'done';

-- One row per worker task of every process taking part in a run; heartbeat_at is refreshed
-- about twice a second while it works, so `status` can show who is active.
CREATE TABLE IF NOT EXISTS bxbatch.worker (
    run_id bigint NOT NULL REFERENCES bxbatch.run (id) ON DELETE CASCADE,
    host text NOT NULL,
    pid integer NOT NULL,
    idx integer NOT NULL,
    job text,
    chunk_id bigint,
    state text NOT NULL DEFAULT 'idle',
    chunks_done bigint NOT NULL DEFAULT 0,
    rows_done bigint NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, host, pid, idx)
);
