-- bxbatch: phase=indexes
-- Activity log indexes (guide, Phase 2). They run in the index phase, after the activity
-- seeding has filled the log: building an index once over the seeded rows is far cheaper
-- than maintaining five indexes for every seeded row.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_activitylog_user_timestamp
    ON database_activitylog (user_id, "timestamp" DESC);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_activitylog_table_timestamp
    ON database_activitylog (table_id, "timestamp" DESC);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_activitylog_action_type
    ON database_activitylog (action_type);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_activitylog_timestamp
    ON database_activitylog ("timestamp" DESC);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_activitylog_details_search
    ON database_activitylog USING gin (details);

-- Not in the guide: indexes on the referencing columns of the log's ON DELETE SET NULL
-- foreign keys that no index above covers, so deleting a field or a workspace does not
-- scan the whole log. Partial: seeded and trigger-written rows leave both NULL.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_activitylog_field
    ON database_activitylog (field_id) WHERE field_id IS NOT NULL;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_activitylog_workspace
    ON database_activitylog (workspace_id) WHERE workspace_id IS NOT NULL;
