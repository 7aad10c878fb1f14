-- bxbatch: phase=schema transactional=false
-- Not in the guide: indexes on the referencing columns of the activity log's ON DELETE SET
-- NULL foreign keys that no index of 110_activitylog_indexes.sql covers, so deleting a field
-- or a workspace does not scan the whole log. Partial: seeded and trigger-written rows leave
-- both columns NULL, so no row bxbatch writes enters them. That is why they are built here,
-- on the log while it is still empty (a few milliseconds), and not after its seeding with
-- the log's other indexes: kept up during the seeding they cost nothing (a predicate test per
-- row), built after it each is a full scan of the log (0.4 s apiece at scale 1, on the
-- critical path). CONCURRENTLY all the same: the log may already hold rows (an install where
-- it existed before the run), and nothing here may block the application's writes.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_activitylog_field
    ON database_activitylog (field_id) WHERE field_id IS NOT NULL;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_activitylog_workspace
    ON database_activitylog (workspace_id) WHERE workspace_id IS NOT NULL;
