-- The bxbatch ledger, core part: runs, phases, applied DDL. Applied by ledger.ensure_schema
-- (all queries/schema_*.sql files in name order, one transaction, advisory lock held).
-- Every statement is idempotent: later versions add columns with ADD COLUMN IF NOT EXISTS.
CREATE SCHEMA IF NOT EXISTS bxbatch;

CREATE TABLE IF NOT EXISTS bxbatch.run (
    id bigserial PRIMARY KEY,
    status text NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'interrupted', 'failed', 'completed', 'completed_with_failures')),
    command text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    bxbatch_version text,
    host text,
    pid integer,
    settings jsonb NOT NULL DEFAULT '{}',
    error text
);

CREATE TABLE IF NOT EXISTS bxbatch.phase (
    run_id bigint NOT NULL REFERENCES bxbatch.run (id) ON DELETE CASCADE,
    name text NOT NULL,
    status text NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'done', 'failed', 'skipped')),
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    detail jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, name)
);

-- One row per DDL file applied to this database (not per run: a file applies once).
CREATE TABLE IF NOT EXISTS bxbatch.ddl_file (
    file text PRIMARY KEY,
    sha256 text NOT NULL,
    phase text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    duration_ms integer NOT NULL,
    run_id bigint
);

-- Progress inside a non-transactional file (CREATE INDEX CONCURRENTLY, VALIDATE ...):
-- one row per statement done, so an interrupted file resumes after its last statement.
CREATE TABLE IF NOT EXISTS bxbatch.ddl_statement (
    file text NOT NULL,
    idx integer NOT NULL,
    file_sha256 text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    duration_ms integer NOT NULL,
    run_id bigint,
    PRIMARY KEY (file, idx)
);
