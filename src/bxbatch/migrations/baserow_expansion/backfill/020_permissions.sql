-- bxbatch: job=permissions source=table key_table=database_workspaceuser key_column=user_id
-- bxbatch: target=database_permission reconcile=true
-- bxbatch: changes=database_workspaceuser.user_id,database_database.*,database_table.*
-- One database_permission row per (workspace member, table of that workspace) (guide,
-- Phase 3, "Permission Migration"). Fixed: the guide's CASE reads g.permissions, an alias
-- that does not exist; it means the member's own permissions (wu). Chunked over the
-- member's user_id, the leading column of the unique key (user_id, resource_type,
-- resource_id), so each chunk appends to one region of that index instead of scattering
-- inserts across it. A chunk covers the members with $1 < user_id <= $2.
-- database_workspace and auth_user are reached through foreign keys of
-- database_workspaceuser, so the guide's joins to them change nothing and are left out.

-- name: chunk
INSERT INTO database_permission
    (user_id, resource_type, resource_id, permission_level, granted_by_id, granted_at)
SELECT wu.user_id, 'table', t.id,
       CASE WHEN wu.permissions ->> 'create_table' = 'true' THEN 'editor' ELSE 'viewer' END,
       t.created_by_id, now()
FROM database_workspaceuser AS wu
JOIN database_database AS d ON d.workspace_id = wu.workspace_id
JOIN database_table AS t ON t.database_id = d.id
WHERE wu.user_id > $1 AND wu.user_id <= $2
ORDER BY wu.user_id, t.id
ON CONFLICT (user_id, resource_type, resource_id) DO NOTHING

-- name: reconcile
-- Within ($1, $2]: what the chunk would produce now (want) against what is there:
-- delete table permissions no membership grants any more (removed member, deleted
-- table), correct level/granted_by that changed, insert the missing ones (a new member
-- of an existing user, a new table). Returns the rows changed.
WITH want AS (
    SELECT wu.user_id, t.id AS resource_id,
           CASE WHEN wu.permissions ->> 'create_table' = 'true' THEN 'editor' ELSE 'viewer' END AS level,
           t.created_by_id
    FROM database_workspaceuser AS wu
    JOIN database_database AS d ON d.workspace_id = wu.workspace_id
    JOIN database_table AS t ON t.database_id = d.id
    WHERE wu.user_id > $1 AND wu.user_id <= $2
), gone AS (
    DELETE FROM database_permission AS p
    WHERE p.user_id > $1 AND p.user_id <= $2 AND p.resource_type = 'table'
      AND NOT EXISTS (SELECT 1 FROM want AS w WHERE w.user_id = p.user_id AND w.resource_id = p.resource_id)
    RETURNING 1
), changed AS (
    UPDATE database_permission AS p
    SET permission_level = w.level, granted_by_id = w.created_by_id
    FROM want AS w
    WHERE p.user_id = w.user_id AND p.resource_type = 'table' AND p.resource_id = w.resource_id
      AND (p.permission_level, p.granted_by_id) IS DISTINCT FROM (w.level, w.created_by_id)
    RETURNING 1
), added AS (
    INSERT INTO database_permission
        (user_id, resource_type, resource_id, permission_level, granted_by_id, granted_at)
    SELECT w.user_id, 'table', w.resource_id, w.level, w.created_by_id, now()
    FROM want AS w
    WHERE NOT EXISTS (
        SELECT 1 FROM database_permission AS p
        WHERE p.user_id = w.user_id AND p.resource_type = 'table' AND p.resource_id = w.resource_id)
    ORDER BY w.user_id, w.resource_id
    ON CONFLICT (user_id, resource_type, resource_id) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone) + (SELECT count(*) FROM changed) + (SELECT count(*) FROM added)

-- name: cut_weights
-- The tables of each workspace, counted once per pass: each planner keeps them on its own session
-- as the temporary table bxbatch_cut_permissions (a pass sees tables added meanwhile in its next
-- pass only: the cut sizes chunks, it decides nothing about which rows are written).
SELECT d.workspace_id, count(*) AS n
FROM database_database AS d JOIN database_table AS t ON t.database_id = d.id
GROUP BY d.workspace_id

-- name: cut
-- Where a chunk over ($1, $2] must end to write at most $3 rows (a member of many big workspaces
-- yields thousands): the largest key whose members up to it yield <= $3 rows (the first key if it
-- alone yields more), with the keys (memberships) and rows up to it; no row when the range is empty.
WITH per_key AS (
    SELECT wu.user_id, count(*) AS keys, coalesce(sum(w.n), 0) AS n
    FROM database_workspaceuser AS wu
    LEFT JOIN pg_temp.bxbatch_cut_permissions AS w ON w.workspace_id = wu.workspace_id
    WHERE wu.user_id > $1 AND wu.user_id <= $2
    GROUP BY wu.user_id
), running AS (
    SELECT user_id, sum(keys) OVER (ORDER BY user_id) AS keys, sum(n) OVER (ORDER BY user_id) AS n,
           row_number() OVER (ORDER BY user_id) AS i
    FROM per_key
)
SELECT user_id::bigint AS key, keys::bigint AS keys, n::bigint AS rows FROM running
WHERE n <= $3 OR i = 1
ORDER BY user_id DESC LIMIT 1

-- name: main_bound
SELECT coalesce(max(user_id), 0) FROM database_workspaceuser

-- name: reconcile_bound
SELECT greatest(
    (SELECT coalesce(max(user_id), 0) FROM database_workspaceuser),
    (SELECT coalesce(max(user_id), 0) FROM database_permission WHERE resource_type = 'table'))

-- name: expected
-- Members times tables, per workspace: the number of rows the backfill writes, without the join.
SELECT coalesce(sum(m.n * t.n), 0)::bigint
FROM (SELECT workspace_id, count(*) AS n FROM database_workspaceuser GROUP BY workspace_id) AS m
JOIN (SELECT d.workspace_id, count(*) AS n
      FROM database_table AS t JOIN database_database AS d ON d.id = t.database_id
      GROUP BY d.workspace_id) AS t ON t.workspace_id = m.workspace_id

-- name: set_based
-- The guide's single statement, fixed (wu.permissions, not g.permissions) and idempotent.
INSERT INTO database_permission
    (user_id, resource_type, resource_id, permission_level, granted_by_id, granted_at)
SELECT DISTINCT wu.user_id, 'table', t.id,
       CASE WHEN wu.permissions ->> 'create_table' = 'true' THEN 'editor' ELSE 'viewer' END,
       t.created_by_id, now()
FROM database_table AS t
JOIN database_database AS d ON t.database_id = d.id
JOIN database_workspace AS w ON d.workspace_id = w.id
JOIN database_workspaceuser AS wu ON w.id = wu.workspace_id
JOIN auth_user AS u ON wu.user_id = u.id
ON CONFLICT (user_id, resource_type, resource_id) DO NOTHING
