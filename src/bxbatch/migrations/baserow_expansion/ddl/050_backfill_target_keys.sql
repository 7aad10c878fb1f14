-- bxbatch: phase=backfill transactional=false
-- The foreign keys of the three backfill targets that only bxbatch writes (the application
-- does not know these tables yet; the activity log is written by the seeding and by
-- bxbatch's trigger), added by the backfill phase once their main and
-- catch-up passes are done and before the settle rounds, instead of with the other keys in
-- 010_foreign_keys.sql. "Load, then constrain", as PostgreSQL's manual advises for bulk
-- loads (14.4, Populating a Database): checked on every inserted row, the three keys of the
-- first two cost 55-60% of the backfills' time, and the log's four half of the activity
-- seeding's (a FOR KEY SHARE lookup of database_table per seeded row, measured: 400k rows
-- 6.4 s with the key on table_id, 3.3 s without; the three keys on columns the seeding
-- leaves NULL another 25%); VALIDATE checks them in one anti-join instead
-- (200_validate_foreign_keys.sql).
--
-- Nothing is lost meanwhile: a view, member or user deleted while the keys are absent
-- leaves an orphan that the reconcile passes of the settle rounds (which run after this
-- file, with the keys enforcing every later delete) remove or correct; the orphan report
-- of the constraint phase checks again before VALIDATE. Each statement commits alone and
-- takes SHARE ROW EXCLUSIVE on its two tables for milliseconds, under lock_timeout with
-- retries.

ALTER TABLE database_tableview_enhanced
    ADD CONSTRAINT fk_tableview_enhanced_view_ptr
    FOREIGN KEY (view_ptr_id) REFERENCES database_view (id) ON DELETE CASCADE NOT VALID;

ALTER TABLE database_permission
    ADD CONSTRAINT fk_permission_user
    FOREIGN KEY (user_id) REFERENCES auth_user (id) ON DELETE CASCADE NOT VALID;

ALTER TABLE database_permission
    ADD CONSTRAINT fk_permission_granted_by
    FOREIGN KEY (granted_by_id) REFERENCES auth_user (id) ON DELETE SET NULL NOT VALID;

-- The activity log's keys. Its rows reference a user, a table, a field and a workspace;
-- seeded rows and trigger rows set only table_id and (trigger rows, from the session's
-- app.current_user_id) user_id, and no other writer knows the table. A table or user deleted
-- before its key existed leaves rows the key's ON DELETE SET NULL would have changed: the
-- two UPDATEs after the keys apply that action now (each commits alone; once a key exists,
-- every later delete applies it itself, and a rerun finds nothing). workspace_id and
-- field_id are NULL in every row bxbatch writes, so they need no such pass; the orphan
-- report of the constraint phase still checks all four before VALIDATE.
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

UPDATE database_activitylog AS l SET table_id = NULL
WHERE l.table_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM database_table AS t WHERE t.id = l.table_id);

UPDATE database_activitylog AS l SET user_id = NULL
WHERE l.user_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM auth_user AS u WHERE u.id = l.user_id);
