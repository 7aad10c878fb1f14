-- The ledger, constraint part. orphan_report: what the orphan check before each
-- VALIDATE CONSTRAINT found (one row per check). orphan_fix: every row --clean-orphans
-- changed, with the row as it was before, so a cleaning can be reviewed or undone by hand.
CREATE TABLE IF NOT EXISTS bxbatch.orphan_report (
    id bigserial PRIMARY KEY,
    run_id bigint,
    constraint_name text NOT NULL,
    table_name text NOT NULL,
    columns text[] NOT NULL,
    referenced_table text NOT NULL,
    orphans bigint NOT NULL,
    sample jsonb NOT NULL DEFAULT '[]',
    checked_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    duration_ms integer NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS bxbatch.orphan_fix (
    id bigserial PRIMARY KEY,
    run_id bigint,
    constraint_name text NOT NULL,
    table_name text NOT NULL,
    action text NOT NULL CHECK (action IN ('set_null', 'delete')),
    row_before jsonb NOT NULL,
    fixed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS orphan_fix_constraint ON bxbatch.orphan_fix (constraint_name);
