-- The ledger, change-capture part (engine/changes.py): which keys of a reconciled job's source
-- could have changed since its main pass began, so a settle round reconciles those ranges only.
--
-- Statement-level triggers on the base tables a job reads (the job file's changes= directive)
-- write the affected keys here, in the writer's transaction: a change row exists exactly when
-- the write committed. key NULL: any key of the job may have changed (a write to a table whose
-- rows do not map to one key, or a TRUNCATE): the next reconcile pass covers the whole job.
CREATE TABLE IF NOT EXISTS bxbatch.changed_key (
    job text NOT NULL,
    key bigint
);
CREATE INDEX IF NOT EXISTS changed_key_job ON bxbatch.changed_key (job);

-- One row per (run, job) whose capture triggers went in before its main pass was created: only
-- such a job may reconcile just the captured keys (otherwise a settle round reconciles it whole).
CREATE TABLE IF NOT EXISTS bxbatch.change_capture (
    run_id bigint NOT NULL,
    job text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, job)
);

-- The capture trigger function. TG_ARGV: job name, key column ('*': no key, record NULL).
-- SECURITY DEFINER: it runs in the application's write, whose role need not see bxbatch's schema.
-- Transition tables are read through EXECUTE (plpgsql registers them for dynamic SQL too).
CREATE OR REPLACE FUNCTION bxbatch.capture_change()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_job text := TG_ARGV[0];
    v_col text := TG_ARGV[1];
BEGIN
    IF v_col = '*' OR TG_OP = 'TRUNCATE' THEN
        INSERT INTO bxbatch.changed_key (job, key) VALUES (v_job, NULL);
    ELSIF TG_OP = 'INSERT' THEN
        EXECUTE format('INSERT INTO bxbatch.changed_key (job, key) SELECT DISTINCT $1, n.%I FROM bxbatch_new AS n',
                       v_col) USING v_job;
    ELSIF TG_OP = 'DELETE' THEN
        EXECUTE format('INSERT INTO bxbatch.changed_key (job, key) SELECT DISTINCT $1, o.%I FROM bxbatch_old AS o',
                       v_col) USING v_job;
    ELSE
        EXECUTE format('INSERT INTO bxbatch.changed_key (job, key) '
                       'SELECT $1, k FROM (SELECT n.%1$I AS k FROM bxbatch_new AS n '
                       'UNION SELECT o.%1$I FROM bxbatch_old AS o) AS u', v_col) USING v_job;
    END IF;
    RETURN NULL;
END;
$$;
