-- The ledger, trigger part: one row per user table whose activity trigger bxbatch installed.
-- high_water is max(id) of the table when the trigger went in (read while CREATE TRIGGER's
-- SHARE ROW EXCLUSIVE lock still held off writers): rows with id <= high_water are seeded
-- into the activity log by the activity_seed backfill, later rows are logged by the trigger.
CREATE TABLE IF NOT EXISTS bxbatch.trigger_install (
    table_id integer PRIMARY KEY,
    relname text NOT NULL,
    high_water bigint NOT NULL,
    installed_at timestamptz NOT NULL DEFAULT now(),
    run_id bigint
);
