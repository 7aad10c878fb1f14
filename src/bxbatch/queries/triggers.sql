-- Named queries of the trigger phase (phases/triggers.py). Loaded by sqlfiles.queries("triggers").

-- name: user_tables
-- User tables: names of the migration's form (database_table_<id>) matched exactly ($2 is an anchored
-- regex, never LIKE, whose _ would match any character), and the id present in the registry table
-- {registry} (database_table: an orphan database_table_<n> left by a deleted table is not a user
-- table; filled with db.idents.fill). With $3 (trigger names),
-- only those lacking one of them: never equipped, or a trigger dropped by hand since
-- (re-installed; the table keeps its first high-water mark).
SELECT c.relname, x.table_id
FROM pg_class c
CROSS JOIN LATERAL (SELECT substring(c.relname FROM '[0-9]+$') AS digits) d
CROSS JOIN LATERAL (
    -- CASE, not AND: the length test must come before the cast (AND has no evaluation order)
    SELECT CASE WHEN length(d.digits) > 10 THEN NULL
                WHEN d.digits::bigint > 2147483647 THEN NULL
                ELSE d.digits::integer END AS table_id
) x
WHERE c.relnamespace = to_regnamespace($1)
  AND c.relkind IN ('r', 'p')
  AND c.relname ~ $2
  AND EXISTS (SELECT 1 FROM {registry} t WHERE t.id = x.table_id)
  AND ($3::text[] IS NULL
       OR (SELECT count(*) FROM pg_trigger g WHERE g.tgrelid = c.oid AND g.tgname = ANY($3::text[]))
          < cardinality($3::text[]))
ORDER BY 2

-- name: present_triggers
SELECT c.relname, t.tgname
FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid
WHERE t.tgrelid = ANY($1::text[]::regclass[]) AND t.tgname = ANY($2::text[])
