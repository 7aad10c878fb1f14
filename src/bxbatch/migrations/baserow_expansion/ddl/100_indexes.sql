-- bxbatch: phase=indexes
-- Performance and full-text indexes of the guide (Phase 2) on the new collaboration,
-- automation, dashboard and presence tables. CONCURRENTLY everywhere so that no build
-- blocks the application's writes; the index phase runs these one at a time, outside a
-- transaction, and rebuilds an index an interrupted build left INVALID.

-- Comment indexes
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_comment_table_row ON database_comment (table_id, row_id);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_comment_user ON database_comment (user_id);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_comment_parent ON database_comment (parent_id);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_comment_created_at ON database_comment (created_at DESC);

-- Automation indexes
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_automation_table ON database_automation (table_id);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_automation_active ON database_automation (is_active);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_automationexecution_automation
    ON database_automationexecution (automation_id);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_automationexecution_status
    ON database_automationexecution (status);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_automationexecution_started_at
    ON database_automationexecution (started_at DESC);

-- Dashboard indexes
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_dashboard_workspace ON database_dashboard (workspace_id);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_dashboard_public ON database_dashboard (is_public);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_dashboardwidget_dashboard
    ON database_dashboardwidget (dashboard_id);

-- User presence indexes
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_userpresence_user ON database_userpresence (user_id);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_userpresence_table ON database_userpresence (table_id);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_userpresence_active ON database_userpresence (is_active);

-- Full-text search
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_comment_content_search
    ON database_comment USING gin (to_tsvector('english', content));
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_dashboard_name_search
    ON database_dashboard USING gin (to_tsvector('english', name));

-- Not in the guide: an index on the referencing column of database_permission's
-- ON DELETE SET NULL foreign key, so deleting a user does not scan every permission.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_permission_granted_by
    ON database_permission (granted_by_id) WHERE granted_by_id IS NOT NULL;
