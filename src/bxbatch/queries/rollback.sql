-- Rollback: what bxbatch added and still exists, what the install had before, steps done.
-- Loaded by sqlfiles.queries("rollback").

-- name: activity_triggers
-- Every trigger calling one of bxbatch's functions ($2), whatever its name, by table.
SELECT c.relname, array_agg(t.tgname ORDER BY t.tgname) AS tgnames
FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_proc p ON p.oid = t.tgfoid
WHERE c.relnamespace = to_regnamespace($1) AND NOT t.tgisinternal AND p.proname = ANY($2::text[])
GROUP BY c.relname
ORDER BY c.relname

-- name: constraints_present
SELECT k.conname, c.relname
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid
WHERE c.relnamespace = to_regnamespace($1) AND k.conname = ANY($2::text[])

-- name: added_columns_present
-- Which of these table.column names ($2) exist in schema $1.
SELECT c.relname || '.' || a.attname AS name
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
WHERE c.relnamespace = to_regnamespace($1) AND a.attnum > 0 AND NOT a.attisdropped
  AND c.relname || '.' || a.attname = ANY($2::text[])

-- name: relations_present
SELECT relname FROM pg_class WHERE relnamespace = to_regnamespace($1) AND relname = ANY($2::text[])

-- name: function_present
SELECT EXISTS (SELECT 1 FROM pg_proc WHERE pronamespace = to_regnamespace($1) AND proname = $2)

-- name: last_run_end
SELECT max(coalesce(finished_at, updated_at)) FROM bxbatch.run

-- name: steps_done
SELECT step FROM bxbatch.rollback_step

-- name: record_step
INSERT INTO bxbatch.rollback_step (step, duration_ms) VALUES ($1, $2) ON CONFLICT (step) DO NOTHING

-- name: ledger_tables
-- The bxbatch schema's tables except those a rollback reads until its last step ($1): dropped one
-- per transaction before the schema, so the final DROP SCHEMA ... CASCADE locks only a few objects.
SELECT c.relname
FROM pg_class c
WHERE c.relnamespace = to_regnamespace('bxbatch') AND c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND NOT (c.relname = ANY($1::text[]))
ORDER BY c.relname

-- name: record_steps
-- A group of steps done in one transaction ($1 keys, $2 the group's duration).
INSERT INTO bxbatch.rollback_step (step, duration_ms)
SELECT k, $2 FROM unnest($1::text[]) AS k
ON CONFLICT (step) DO NOTHING
