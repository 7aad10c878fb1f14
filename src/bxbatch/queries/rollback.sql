-- Rollback: what bxbatch added and still exists, what the install had before, steps done.
-- Loaded by sqlfiles.queries("rollback").

-- name: trigger_tables
-- The next tables ($4 at most) after $3 in name order that still have a trigger calling one of
-- bxbatch's functions ($2), whatever its name, with those triggers' names. Keyset batches: the
-- catalog itself says what is left to drop (driven by pg_class's name index, so each batch reads
-- O(batch) catalog rows, not the whole pg_trigger).
SELECT c.relname, tg.tgnames
FROM pg_class c
CROSS JOIN LATERAL (
    SELECT array_agg(t.tgname ORDER BY t.tgname) AS tgnames
    FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
    WHERE t.tgrelid = c.oid AND NOT t.tgisinternal AND p.proname = ANY($2::text[])
) tg
WHERE c.relnamespace = to_regnamespace($1) AND c.relkind IN ('r', 'p') AND c.relname > $3::name
  AND tg.tgnames IS NOT NULL
ORDER BY c.relname
LIMIT $4

-- name: trigger_tables_count
-- How many tables still have such a trigger (the rollback's summary and its step total).
SELECT count(DISTINCT t.tgrelid)
FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_proc p ON p.oid = t.tgfoid
WHERE c.relnamespace = to_regnamespace($1) AND NOT t.tgisinternal AND p.proname = ANY($2::text[])

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
-- The steps done other than trigger drops (whose tables the catalog no longer lists: no set of them).
SELECT step FROM bxbatch.rollback_step WHERE step NOT LIKE 'trigger:%'

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
