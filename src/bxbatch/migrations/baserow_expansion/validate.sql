-- Validation expectations of the Baserow expansion (migration.toml [validate] names them).
-- backfill: $1 = sample size, then the [params] it lists; per_table: $1 = the table id, $2 = the sample
-- size, {table} = its quoted name; orphans: $1 = sample size, $2 = the user table ids. The columns each
-- returns: docs/migration-format.md.

-- name: enhanced_views
-- One database_tableview_enhanced row per view of the grid type ($2); $1 = sample size.
WITH want AS (SELECT id FROM database_view WHERE type = $2),
have AS (SELECT view_ptr_id AS id FROM database_tableview_enhanced),
missing AS (SELECT id FROM want EXCEPT SELECT id FROM have),
extra AS (SELECT id FROM have EXCEPT SELECT id FROM want)
SELECT (SELECT count(*) FROM want) AS expected,
       (SELECT count(*) FROM have) AS actual,
       (SELECT count(*) FROM missing) AS missing,
       (SELECT array_agg(id::text) FROM (SELECT id FROM missing ORDER BY id LIMIT $1) s) AS missing_sample,
       (SELECT count(*) FROM extra) AS extra,
       (SELECT array_agg(id::text) FROM (SELECT id FROM extra ORDER BY id LIMIT $1) s) AS extra_sample,
       0::bigint AS wrong,
       NULL::text[] AS wrong_sample

-- name: permissions
-- One 'table' permission per (member, table of the member's workspace): level editor iff the
-- member's permissions say create_table = 'true', granted_by = the table's creator.
WITH want AS (
    SELECT wu.user_id, t.id AS resource_id,
           CASE WHEN bool_or(wu.permissions ->> 'create_table' = 'true') THEN 'editor' ELSE 'viewer' END AS level,
           count(DISTINCT (wu.permissions ->> 'create_table' = 'true')) AS levels,
           t.created_by_id
    FROM database_workspaceuser wu
    JOIN database_database d ON d.workspace_id = wu.workspace_id
    JOIN database_table t ON t.database_id = d.id
    GROUP BY wu.user_id, t.id, t.created_by_id
),
have AS (
    SELECT user_id, resource_id, permission_level, granted_by_id
    FROM database_permission WHERE resource_type = 'table'
),
missing AS (
    SELECT w.user_id, w.resource_id FROM want w
    WHERE NOT EXISTS (SELECT 1 FROM have h WHERE h.user_id = w.user_id AND h.resource_id = w.resource_id)
),
extra AS (
    SELECT h.user_id, h.resource_id FROM have h
    WHERE NOT EXISTS (SELECT 1 FROM want w WHERE w.user_id = h.user_id AND w.resource_id = h.resource_id)
),
wrong AS (
    SELECT h.user_id, h.resource_id FROM have h
    JOIN want w ON w.user_id = h.user_id AND w.resource_id = h.resource_id
    WHERE (w.levels = 1 AND h.permission_level IS DISTINCT FROM w.level)
       OR h.granted_by_id IS DISTINCT FROM w.created_by_id
)
SELECT (SELECT count(*) FROM want) AS expected,
       (SELECT count(*) FROM have) AS actual,
       (SELECT count(*) FROM missing) AS missing,
       (SELECT array_agg(k) FROM (SELECT format('user %s, table %s', user_id, resource_id) AS k FROM missing
                                  ORDER BY user_id, resource_id LIMIT $1) s) AS missing_sample,
       (SELECT count(*) FROM extra) AS extra,
       (SELECT array_agg(k) FROM (SELECT format('user %s, table %s', user_id, resource_id) AS k FROM extra
                                  ORDER BY user_id, resource_id LIMIT $1) s) AS extra_sample,
       (SELECT count(*) FROM wrong) AS wrong,
       (SELECT array_agg(k) FROM (SELECT format('user %s, table %s', user_id, resource_id) AS k FROM wrong
                                  ORDER BY user_id, resource_id LIMIT $1) s) AS wrong_sample

-- name: activity_for_table
-- One user table ($1 = its id, {table} = its quoted name): every present row has exactly one
-- 'row_created' entry; an entry for a row that is gone must be followed by its 'row_deleted'.
WITH created AS (
    SELECT row_id, count(*) AS n FROM database_activitylog
    WHERE table_id = $1 AND action_type = 'row_created' GROUP BY row_id
),
deleted AS (
    SELECT DISTINCT row_id FROM database_activitylog WHERE table_id = $1 AND action_type = 'row_deleted'
),
missing AS (SELECT r.id FROM {table} r WHERE NOT EXISTS (SELECT 1 FROM created c WHERE c.row_id = r.id)),
extra AS (
    SELECT c.row_id AS id FROM created c
    WHERE NOT EXISTS (SELECT 1 FROM {table} r WHERE r.id = c.row_id)
      AND NOT EXISTS (SELECT 1 FROM deleted d WHERE d.row_id = c.row_id)
),
doubled AS (SELECT row_id AS id FROM created WHERE n > 1)
SELECT (SELECT count(*) FROM {table}) AS expected,
       (SELECT coalesce(sum(n), 0) FROM created)::bigint AS actual,
       (SELECT count(*) FROM missing) AS missing,
       (SELECT array_agg(format('table %s, row %s', $1, id)) FROM (SELECT id FROM missing ORDER BY id LIMIT $2) s)
           AS missing_sample,
       (SELECT count(*) FROM extra) AS extra,
       (SELECT array_agg(format('table %s, row %s', $1, id)) FROM (SELECT id FROM extra ORDER BY id LIMIT $2) s)
           AS extra_sample,
       (SELECT count(*) FROM doubled) AS wrong,
       (SELECT array_agg(format('table %s, row %s (logged twice)', $1, id))
        FROM (SELECT id FROM doubled ORDER BY id LIMIT $2) s) AS wrong_sample

-- name: permission_orphans
SELECT count(*) AS n,
       (SELECT array_agg(k) FROM (SELECT format('permission %s (table %s)', p2.id, p2.resource_id) AS k
                                  FROM database_permission p2
                                  WHERE p2.resource_type = 'table'
                                    AND NOT EXISTS (SELECT 1 FROM database_table t WHERE t.id = p2.resource_id)
                                  ORDER BY p2.id LIMIT $1) s) AS sample
FROM database_permission p
WHERE p.resource_type = 'table' AND NOT EXISTS (SELECT 1 FROM database_table t WHERE t.id = p.resource_id)

-- name: activity_orphan_tables
-- 'row_created' entries of tables that are not user tables any more ($2: the user table ids), the ids as sample.
-- One scan of the log, the ids hashed (an anti-join with the unnested array): `NOT (table_id = ANY($2))`
-- searched the 300-id array once per log row, twice (2.7 s of the 6.9 s validation at scale 1).
WITH orphan AS (
    SELECT l.table_id, count(*) AS n
    FROM database_activitylog AS l
    WHERE l.action_type = 'row_created' AND l.table_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM unnest($2::integer[]) AS u(id) WHERE u.id = l.table_id)
    GROUP BY l.table_id
)
SELECT coalesce((SELECT sum(n) FROM orphan), 0)::bigint AS n,
       (SELECT array_agg(i::text) FROM (SELECT table_id AS i FROM orphan ORDER BY 1 LIMIT $1) s) AS sample
