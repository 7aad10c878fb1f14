-- Catalog queries of `bxbatch plan` (plan.py). Loaded by sqlfiles.queries("plan").

-- name: reltuples
-- The planner's row estimate of each of these tables ($2, relnames in schema $1) in one statement;
-- -1 for a table never analyzed (PG 14+; 0 rows and 0 pages on older servers count as unknown too).
SELECT c.relname,
       CASE WHEN c.reltuples < 0 OR (c.reltuples = 0 AND c.relpages = 0) THEN -1
            ELSE c.reltuples::bigint END AS est
FROM pg_class c
WHERE c.relnamespace = to_regnamespace($1) AND c.relname = ANY($2::text[])

-- name: index_validity
-- The migration's indexes that exist ($2, in schema $1), and whether each is valid.
SELECT c.relname AS name, i.indisvalid AS valid
FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid
WHERE c.relnamespace = to_regnamespace($1) AND c.relname = ANY($2::text[])

-- name: constraint_validity
-- The migration's foreign keys that exist ($2, in schema $1), and whether each is validated.
SELECT conname, convalidated FROM pg_constraint
WHERE connamespace = to_regnamespace($1) AND conname = ANY($2::text[])
