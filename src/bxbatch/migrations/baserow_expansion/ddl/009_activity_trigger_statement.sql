-- bxbatch: phase=schema
-- The activity trigger, statement-level (what the trigger phase installs): the same log entries
-- as log_table_activity() in 007 (same user, table, row, action and details, same corrections:
-- table id from the trigger argument, NULL user when app.current_user_id is unset or not an
-- integer, pinned search_path), written with one INSERT ... SELECT per statement from the
-- statement's transition tables instead of one plpgsql call and one INSERT per row.
-- benchmarks/trigger_overhead.py measures both on a 10,000-row bulk insert.
--
-- Transition tables need one trigger per event, so each user table gets three:
--   AFTER INSERT  REFERENCING NEW TABLE AS bxbatch_new                 -> row_created
--   AFTER UPDATE  REFERENCING OLD TABLE AS bxbatch_old NEW TABLE AS bxbatch_new -> row_updated
--   AFTER DELETE  REFERENCING OLD TABLE AS bxbatch_old                 -> row_deleted
-- An UPDATE pairs old and new rows by id (Baserow never changes a row's id).
-- 007's row-level function stays in place, unused, for installs that want it.
CREATE OR REPLACE FUNCTION public.log_table_activity_stmt()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
DECLARE
    v_setting text := current_setting('app.current_user_id', true);
    v_user_id integer;
    v_table_id integer := TG_ARGV[0]::integer;
BEGIN
    IF v_setting ~ '^[0-9]{1,9}$' THEN
        v_user_id := v_setting::integer;
    END IF;

    IF TG_OP = 'INSERT' THEN
        INSERT INTO public.database_activitylog (user_id, table_id, row_id, action_type, details)
        SELECT v_user_id, v_table_id, n.id, 'row_created', jsonb_build_object('row_data', to_jsonb(n))
        FROM bxbatch_new n;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO public.database_activitylog (user_id, table_id, row_id, action_type, details)
        SELECT v_user_id, v_table_id, n.id, 'row_updated',
               jsonb_build_object('old_data', to_jsonb(o), 'new_data', to_jsonb(n))
        FROM bxbatch_new n
        JOIN bxbatch_old o ON o.id = n.id;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO public.database_activitylog (user_id, table_id, row_id, action_type, details)
        SELECT v_user_id, v_table_id, o.id, 'row_deleted', jsonb_build_object('row_data', to_jsonb(o))
        FROM bxbatch_old o;
    END IF;
    RETURN NULL;
END;
$$;
