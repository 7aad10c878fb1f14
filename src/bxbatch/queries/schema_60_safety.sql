-- The ledger, safety-net part: backups taken (or skipped), the expected objects that existed
-- before bxbatch first changed anything (rollback never drops those), and rollback progress.

CREATE TABLE IF NOT EXISTS bxbatch.backup (
    id bigserial PRIMARY KEY,
    run_id bigint,
    status text NOT NULL CHECK (status IN ('verified', 'skipped')),
    taken_at timestamptz NOT NULL DEFAULT now(),
    path text,
    bytes bigint,
    seconds double precision,
    toc_entries integer,
    pg_dump text,
    pg_dump_version text,
    reason text
);

-- Written once, by the first preflight phase that finds no DDL file applied yet: the
-- tables, indexes, constraints and functions of sql/ddl that the install already had.
CREATE TABLE IF NOT EXISTS bxbatch.preexisting (
    kind text NOT NULL,
    name text NOT NULL,
    PRIMARY KEY (kind, name)
);

CREATE TABLE IF NOT EXISTS bxbatch.preexisting_taken (
    singleton boolean PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    taken_at timestamptz NOT NULL DEFAULT now(),
    run_id bigint
);

-- One row per rollback step done; the whole schema (and this table) is the last thing dropped.
CREATE TABLE IF NOT EXISTS bxbatch.rollback_step (
    step text PRIMARY KEY,
    done_at timestamptz NOT NULL DEFAULT now(),
    duration_ms integer NOT NULL
);
