-- bxbatch: phase=indexes
-- Activity log indexes (guide, Phase 2). They run in the index phase, after the activity
-- seeding has filled the log: building an index once over the seeded rows is far cheaper
-- than maintaining five indexes for every seeded row. (The log's two partial indexes are
-- built on the empty log instead: 011_activitylog_partial_indexes.sql.)
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
