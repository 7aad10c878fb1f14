-- bxbatch: phase=backfill transactional=false
-- The foreign keys of two of the three backfill targets that only bxbatch writes (the
-- application does not know these tables yet), added by the backfill phase once every job's
-- main and catch-up passes are done and before the settle rounds, instead of with the other
-- keys in 010_foreign_keys.sql. The third target's, the activity log's, are in
-- 051_activitylog_keys.sql, added as soon as the activity seeding is done. "Load, then
-- constrain", as PostgreSQL's manual advises for bulk loads (14.4, Populating a Database):
-- checked on every inserted row, these three keys cost 55-60% of the two jobs' time;
-- VALIDATE checks them in one anti-join instead (200_validate_foreign_keys.sql).
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
