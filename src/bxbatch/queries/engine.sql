-- Catalog and user-table queries of the backfill engine (no ledger table). Loaded by
-- sqlfiles.queries("engine"). {table} and {key} are identifiers quoted by db.quote_ident.

-- name: walk_key
-- The planner's step: the key `offset` keys after $1 (index only; never OFFSET over data).
SELECT {key} FROM {table} WHERE {key} > $1 AND {key} <= $2 ORDER BY {key} OFFSET $3 LIMIT 1

-- name: count_keys
-- Keys in ($1, $2], counted no further than $3.
SELECT count(*) FROM (SELECT 1 FROM {table} WHERE {key} > $1 AND {key} <= $2 LIMIT $3) AS s

-- name: reltuples
SELECT greatest(c.reltuples, 0)::bigint FROM pg_class AS c WHERE c.oid = to_regclass($1)

-- name: live_user_tables
-- Which of these (table id, relname) pairs still exist, physically and in the registry table {registry}.
SELECT s.i::integer AS i
FROM unnest($1::bigint[], $2::text[]) WITH ORDINALITY AS s (tid, rel, i)
WHERE to_regclass(format('%I.%I', $3::text, s.rel)) IS NOT NULL
  AND EXISTS (SELECT 1 FROM {registry} AS t WHERE t.id = s.tid)

-- name: analyzed_columns
-- $1 = a target's regclass (text). The columns its early ANALYZE covers (backfill/passes.analyze_target):
-- all but the JSON ones; none (a plain ANALYZE) when the table has no JSON column, or only JSON ones.
SELECT a.attname FROM pg_attribute AS a
WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
  AND a.atttypid NOT IN ('json'::regtype, 'jsonb'::regtype)
  AND EXISTS (SELECT 1 FROM pg_attribute AS j
              WHERE j.attrelid = a.attrelid AND j.attnum > 0 AND NOT j.attisdropped
                AND j.atttypid IN ('json'::regtype, 'jsonb'::regtype))
ORDER BY a.attnum
