-- Post-migration validation: catalog state and backfill results against what the base tables imply.
-- Loaded by sqlfiles.queries("validate"). {table} placeholders are filled with db.qualified() only.

-- name: columns
SELECT c.relname, a.attname
FROM pg_class c
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relnamespace = to_regnamespace($1) AND c.relkind IN ('r', 'p') AND c.relname = ANY($2::text[])

-- name: indexes
SELECT c.relname AS name, t.relname AS table_name, i.indisvalid AS valid, i.indisready AS ready
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
WHERE c.relnamespace = to_regnamespace($1) AND (c.relname = ANY($2::text[]) OR t.relname = ANY($3::text[]))

-- name: constraints
SELECT k.conname AS name, t.relname AS table_name, k.contype::text AS kind, k.convalidated AS validated
FROM pg_constraint k
JOIN pg_class t ON t.oid = k.conrelid
WHERE t.relnamespace = to_regnamespace($1) AND k.conname = ANY($2::text[])

-- name: functions
SELECT p.proname
FROM pg_proc p
WHERE p.pronamespace = to_regnamespace($1) AND p.proname = ANY($2::text[])

-- name: triggers
-- Tables carrying triggers that call the activity functions ($2): the events they cover
-- (tgtype bits INSERT 4, DELETE 8, UPDATE 16) and whether all are enabled.
SELECT c.relname,
       bit_or(t.tgtype::integer) & 28 AS events,
       bool_and(t.tgenabled <> 'D') AS enabled,
       string_agg(t.tgname, ', ' ORDER BY t.tgname) AS names
FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_proc p ON p.oid = t.tgfoid
WHERE c.relnamespace = to_regnamespace($1) AND NOT t.tgisinternal AND p.proname = ANY($2::text[])
GROUP BY c.relname

-- name: fk_orphans
-- Rows of {table} whose {column} points at no {ref_table}.{ref_column} (for a foreign key the
-- server has not validated); $1 = sample size.
WITH orphans AS (
    SELECT x.{column} AS v FROM {table} x
    WHERE x.{column} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {ref_table} r WHERE r.{ref_column} = x.{column})
)
SELECT count(*) AS n,
       (SELECT array_agg(DISTINCT v::text) FROM (SELECT v FROM orphans ORDER BY v LIMIT $1) s) AS sample
FROM orphans

-- name: table_bytes
-- The size on disk of each of these tables ($2) of schema $1: validation reads the biggest groups of user
-- tables first (pg_relation_size: a file's size, exact and cheap, where reltuples may be unset).
SELECT c.relname, pg_relation_size(c.oid) AS bytes
FROM pg_class AS c
WHERE c.relnamespace = to_regnamespace($1) AND c.relname = ANY($2::text[])
