-- bxbatch: phase=schema
-- The activity logging trigger function (guide, Phase 4), corrected:
--  * user tables (database_table_<id>) have no table_id column, so the guide's
--    NEW.table_id fails; the table id is the trigger's first argument instead
--    (CREATE TRIGGER ... EXECUTE FUNCTION log_table_activity('<id>')).
--  * current_setting('app.current_user_id') raises when the setting is unset (every
--    session that is not the web app: shells, workers, bxbatch itself); the two-argument
--    form returns NULL, and a value that is not an integer is logged as NULL too rather
--    than failing the user's write.
--  * search_path is pinned so a caller's search_path cannot redirect the INSERT.
-- Installing it on each user table is the trigger phase's job (one short transaction
-- per table), not this file's.
CREATE OR REPLACE FUNCTION public.log_table_activity()
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
        VALUES (v_user_id, v_table_id, NEW.id, 'row_created',
                jsonb_build_object('row_data', to_jsonb(NEW)));
        RETURN NEW;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO public.database_activitylog (user_id, table_id, row_id, action_type, details)
        VALUES (v_user_id, v_table_id, NEW.id, 'row_updated',
                jsonb_build_object('old_data', to_jsonb(OLD), 'new_data', to_jsonb(NEW)));
        RETURN NEW;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO public.database_activitylog (user_id, table_id, row_id, action_type, details)
        VALUES (v_user_id, v_table_id, OLD.id, 'row_deleted',
                jsonb_build_object('row_data', to_jsonb(OLD)));
        RETURN OLD;
    END IF;
    RETURN NULL;
END;
$$;
