-- What the install already had of the migration's objects before bxbatch's first DDL (ledger/preexisting.py).
-- Loaded by sqlfiles.queries("preexisting").

-- name: preexisting_taken
SELECT EXISTS (SELECT 1 FROM bxbatch.preexisting_taken)

-- name: record_preexisting
-- $1 schema, $2 tables, $3 indexes, $4 foreign keys, $5 functions, $6 added columns (table.column) of the
-- migration's ddl/: those present now.
INSERT INTO bxbatch.preexisting (kind, name)
SELECT 'table', c.relname FROM pg_class c
WHERE c.relnamespace = to_regnamespace($1) AND c.relkind IN ('r', 'p') AND c.relname = ANY($2::text[])
UNION ALL
SELECT 'index', c.relname FROM pg_class c
WHERE c.relnamespace = to_regnamespace($1) AND c.relkind IN ('i', 'I') AND c.relname = ANY($3::text[])
UNION ALL
SELECT 'constraint', k.conname FROM pg_constraint k
WHERE k.connamespace = to_regnamespace($1) AND k.conname = ANY($4::text[])
UNION ALL
SELECT 'function', p.proname FROM pg_proc p
WHERE p.pronamespace = to_regnamespace($1) AND p.proname = ANY($5::text[])
UNION ALL
SELECT 'column', c.relname || '.' || a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
WHERE c.relnamespace = to_regnamespace($1) AND a.attnum > 0 AND NOT a.attisdropped
  AND c.relname || '.' || a.attname = ANY($6::text[])
ON CONFLICT DO NOTHING

-- name: mark_preexisting_taken
INSERT INTO bxbatch.preexisting_taken (run_id) VALUES ($1) ON CONFLICT DO NOTHING

-- name: preexisting
SELECT kind, name FROM bxbatch.preexisting

-- name: safety_ledger_present
-- The ledger tables of schema_60_safety.sql (absent in a ledger older than them).
SELECT to_regclass('bxbatch.rollback_step') IS NOT NULL AND to_regclass('bxbatch.preexisting') IS NOT NULL
