-- bxbatch: phase=backfill transactional=false after=activity_seed
-- The activity log's four foreign keys, added by the backfill phase as soon as the activity
-- seeding's main and catch-up passes are done (after=activity_seed): the log's index builds,
-- the longest step of the run, start straight after them, while the other jobs still load
-- (a key added to the log later would wait for those builds). "Load, then constrain", as in
-- 050_backfill_target_keys.sql: checked on every seeded row, the keys cost half of the
-- seeding (a FOR KEY SHARE lookup of database_table per row, measured: 400k rows 6.4 s with
-- the key on table_id, 3.3 s without; the three keys on columns the seeding leaves NULL
-- another 25%); VALIDATE checks them in one anti-join instead (200_validate_foreign_keys.sql).
--
-- The log's rows reference a user, a table, a field and a workspace; seeded rows and trigger
-- rows set only table_id and (trigger rows, from the session's app.current_user_id) user_id,
-- and no other writer knows the table. A table or user deleted before its key existed leaves
-- rows the key's ON DELETE SET NULL would have changed: the UPDATE after the keys applies
-- that action now, both columns in one scan of the log (once a key exists, every later delete
-- applies it itself, and a rerun finds nothing). workspace_id and field_id are NULL in every
-- row bxbatch writes, so they need no such pass; the orphan report of the constraint phase
-- still checks all four before VALIDATE. Each statement commits alone; each ALTER takes SHARE
-- ROW EXCLUSIVE on its two tables for milliseconds, under lock_timeout with retries.
ALTER TABLE database_activitylog
    ADD CONSTRAINT fk_activitylog_user
    FOREIGN KEY (user_id) REFERENCES auth_user (id) ON DELETE SET NULL NOT VALID;

ALTER TABLE database_activitylog
    ADD CONSTRAINT fk_activitylog_workspace
    FOREIGN KEY (workspace_id) REFERENCES database_workspace (id) ON DELETE SET NULL NOT VALID;

ALTER TABLE database_activitylog
    ADD CONSTRAINT fk_activitylog_table
    FOREIGN KEY (table_id) REFERENCES database_table (id) ON DELETE SET NULL NOT VALID;

ALTER TABLE database_activitylog
    ADD CONSTRAINT fk_activitylog_field
    FOREIGN KEY (field_id) REFERENCES database_field (id) ON DELETE SET NULL NOT VALID;

UPDATE database_activitylog AS l
SET table_id = CASE WHEN EXISTS (SELECT 1 FROM database_table AS t WHERE t.id = l.table_id) THEN l.table_id END,
    user_id = CASE WHEN EXISTS (SELECT 1 FROM auth_user AS u WHERE u.id = l.user_id) THEN l.user_id END
WHERE (l.table_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM database_table AS t WHERE t.id = l.table_id))
   OR (l.user_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM auth_user AS u WHERE u.id = l.user_id));
