-- bxbatch: phase=schema
-- Every foreign key of the guide, added NOT VALID: the new tables are empty, so this only
-- takes a brief SHARE ROW EXCLUSIVE lock on each referenced base table (bxbatch sets
-- lock_timeout and retries), and from here on every write is checked and every delete
-- of a referenced row applies its ON DELETE action, also while the backfills run.
-- 200_validate_foreign_keys.sql validates them later under the weaker
-- SHARE UPDATE EXCLUSIVE lock, after the orphan report.
--
-- Except the keys of the three tables only bxbatch writes, database_tableview_enhanced,
-- database_permission and database_activitylog: 050_backfill_target_keys.sql adds those
-- after their backfills have loaded them (checked in bulk, not row by row; see that file).
--
-- ON DELETE: SET NULL for optional references (the guide's own choice for the three it
-- names). Differs from the guide for the *_ptr_id primary keys and
-- database_permission.user_id: they cannot be NULL, so they CASCADE, as Django's
-- multi-table inheritance parent link does; the guide's plain REFERENCES would instead
-- make deleting a view or field fail once the new tables hold rows.

ALTER TABLE database_kanbanview
    ADD CONSTRAINT fk_kanbanview_view_ptr
    FOREIGN KEY (view_ptr_id) REFERENCES database_view (id) ON DELETE CASCADE NOT VALID;

ALTER TABLE database_kanbanview
    ADD CONSTRAINT fk_kanban_single_select_field
    FOREIGN KEY (single_select_field_id) REFERENCES database_field (id) ON DELETE SET NULL NOT VALID;

ALTER TABLE database_kanbanview
    ADD CONSTRAINT fk_kanbanview_card_cover_image_field
    FOREIGN KEY (card_cover_image_field_id) REFERENCES database_field (id) ON DELETE SET NULL NOT VALID;

ALTER TABLE database_timelineview
    ADD CONSTRAINT fk_timelineview_view_ptr
    FOREIGN KEY (view_ptr_id) REFERENCES database_view (id) ON DELETE CASCADE NOT VALID;

ALTER TABLE database_timelineview
    ADD CONSTRAINT fk_timeline_start_date_field
    FOREIGN KEY (start_date_field_id) REFERENCES database_field (id) ON DELETE SET NULL NOT VALID;

ALTER TABLE database_timelineview
    ADD CONSTRAINT fk_timelineview_end_date_field
    FOREIGN KEY (end_date_field_id) REFERENCES database_field (id) ON DELETE SET NULL NOT VALID;

ALTER TABLE database_timelineview
    ADD CONSTRAINT fk_timelineview_color_field
    FOREIGN KEY (color_field_id) REFERENCES database_field (id) ON DELETE SET NULL NOT VALID;

ALTER TABLE database_calendarview
    ADD CONSTRAINT fk_calendarview_view_ptr
    FOREIGN KEY (view_ptr_id) REFERENCES database_view (id) ON DELETE CASCADE NOT VALID;

ALTER TABLE database_calendarview
    ADD CONSTRAINT fk_calendar_date_field
    FOREIGN KEY (date_field_id) REFERENCES database_field (id) ON DELETE SET NULL NOT VALID;

ALTER TABLE database_calendarview
    ADD CONSTRAINT fk_calendarview_end_date_field
    FOREIGN KEY (end_date_field_id) REFERENCES database_field (id) ON DELETE SET NULL NOT VALID;

ALTER TABLE database_calendarview
    ADD CONSTRAINT fk_calendarview_color_field
    FOREIGN KEY (color_field_id) REFERENCES database_field (id) ON DELETE SET NULL NOT VALID;

ALTER TABLE database_progressbarfield
    ADD CONSTRAINT fk_progressbarfield_field_ptr
    FOREIGN KEY (field_ptr_id) REFERENCES database_field (id) ON DELETE CASCADE NOT VALID;

ALTER TABLE database_progressbarfield
    ADD CONSTRAINT fk_progressbarfield_source_field
    FOREIGN KEY (source_field_id) REFERENCES database_field (id) ON DELETE SET NULL NOT VALID;

ALTER TABLE database_peoplefield
    ADD CONSTRAINT fk_peoplefield_field_ptr
    FOREIGN KEY (field_ptr_id) REFERENCES database_field (id) ON DELETE CASCADE NOT VALID;

ALTER TABLE database_formulafield
    ADD CONSTRAINT fk_formulafield_field_ptr
    FOREIGN KEY (field_ptr_id) REFERENCES database_field (id) ON DELETE CASCADE NOT VALID;

ALTER TABLE database_rollupfield
    ADD CONSTRAINT fk_rollupfield_field_ptr
    FOREIGN KEY (field_ptr_id) REFERENCES database_field (id) ON DELETE CASCADE NOT VALID;

ALTER TABLE database_rollupfield
    ADD CONSTRAINT fk_rollupfield_linked_field
    FOREIGN KEY (linked_field_id) REFERENCES database_field (id) ON DELETE SET NULL NOT VALID;

ALTER TABLE database_rollupfield
    ADD CONSTRAINT fk_rollupfield_target_field
    FOREIGN KEY (target_field_id) REFERENCES database_field (id) ON DELETE SET NULL NOT VALID;

ALTER TABLE database_lookupfield
    ADD CONSTRAINT fk_lookupfield_field_ptr
    FOREIGN KEY (field_ptr_id) REFERENCES database_field (id) ON DELETE CASCADE NOT VALID;

ALTER TABLE database_lookupfield
    ADD CONSTRAINT fk_lookupfield_linked_field
    FOREIGN KEY (linked_field_id) REFERENCES database_field (id) ON DELETE SET NULL NOT VALID;

ALTER TABLE database_lookupfield
    ADD CONSTRAINT fk_lookupfield_target_field
    FOREIGN KEY (target_field_id) REFERENCES database_field (id) ON DELETE SET NULL NOT VALID;

ALTER TABLE database_comment
    ADD CONSTRAINT fk_comment_table
    FOREIGN KEY (table_id) REFERENCES database_table (id) ON DELETE SET NULL NOT VALID;

ALTER TABLE database_comment
    ADD CONSTRAINT fk_comment_user
    FOREIGN KEY (user_id) REFERENCES auth_user (id) ON DELETE SET NULL NOT VALID;

ALTER TABLE database_comment
    ADD CONSTRAINT fk_comment_parent
    FOREIGN KEY (parent_id) REFERENCES database_comment (id) ON DELETE SET NULL NOT VALID;

ALTER TABLE database_comment
    ADD CONSTRAINT fk_comment_resolved_by
    FOREIGN KEY (resolved_by_id) REFERENCES auth_user (id) ON DELETE SET NULL NOT VALID;

ALTER TABLE database_userpresence
    ADD CONSTRAINT fk_userpresence_user
    FOREIGN KEY (user_id) REFERENCES auth_user (id) ON DELETE SET NULL NOT VALID;

ALTER TABLE database_userpresence
    ADD CONSTRAINT fk_userpresence_table
    FOREIGN KEY (table_id) REFERENCES database_table (id) ON DELETE SET NULL NOT VALID;

ALTER TABLE database_userpresence
    ADD CONSTRAINT fk_userpresence_view
    FOREIGN KEY (view_id) REFERENCES database_view (id) ON DELETE SET NULL NOT VALID;

ALTER TABLE database_automation
    ADD CONSTRAINT fk_automation_table
    FOREIGN KEY (table_id) REFERENCES database_table (id) ON DELETE SET NULL NOT VALID;

ALTER TABLE database_automation
    ADD CONSTRAINT fk_automation_created_by
    FOREIGN KEY (created_by_id) REFERENCES auth_user (id) ON DELETE SET NULL NOT VALID;

ALTER TABLE database_automationstep
    ADD CONSTRAINT fk_automationstep_automation
    FOREIGN KEY (automation_id) REFERENCES database_automation (id) ON DELETE SET NULL NOT VALID;

ALTER TABLE database_automationexecution
    ADD CONSTRAINT fk_automationexecution_automation
    FOREIGN KEY (automation_id) REFERENCES database_automation (id) ON DELETE SET NULL NOT VALID;

ALTER TABLE database_automationexecution
    ADD CONSTRAINT fk_automationexecution_triggered_by
    FOREIGN KEY (triggered_by_id) REFERENCES auth_user (id) ON DELETE SET NULL NOT VALID;

ALTER TABLE database_dashboard
    ADD CONSTRAINT fk_dashboard_workspace
    FOREIGN KEY (workspace_id) REFERENCES database_workspace (id) ON DELETE SET NULL NOT VALID;

ALTER TABLE database_dashboard
    ADD CONSTRAINT fk_dashboard_created_by
    FOREIGN KEY (created_by_id) REFERENCES auth_user (id) ON DELETE SET NULL NOT VALID;

ALTER TABLE database_dashboardwidget
    ADD CONSTRAINT fk_dashboardwidget_dashboard
    FOREIGN KEY (dashboard_id) REFERENCES database_dashboard (id) ON DELETE SET NULL NOT VALID;
