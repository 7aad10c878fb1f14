-- Rollback guards of the Baserow expansion (migration.toml [[rollback.guards]]): $1 = the end of the
-- last run; each returns how many rows the application added to its table since.

-- name: activity_after
SELECT count(*) FROM database_activitylog WHERE "timestamp" > $1

-- name: permissions_after
SELECT count(*) FROM database_permission WHERE granted_at > $1
