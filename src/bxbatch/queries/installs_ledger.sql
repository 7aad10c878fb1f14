-- The per-table trigger installs and their high-water marks (bxbatch.trigger_install): owned by
-- ledger/installs.py. Loaded by sqlfiles.queries("installs_ledger").

-- name: record_installs
-- One row per table; a table recorded earlier keeps its first high-water mark (RETURNING gives it).
INSERT INTO bxbatch.trigger_install (table_id, relname, high_water, run_id)
SELECT u.table_id, u.relname, u.high_water, $4
FROM unnest($1::integer[], $2::text[], $3::bigint[]) AS u(table_id, relname, high_water)
ON CONFLICT (table_id) DO UPDATE SET relname = EXCLUDED.relname
RETURNING table_id, high_water

-- name: installed_ids
SELECT table_id FROM bxbatch.trigger_install

-- name: installed_count
SELECT count(*) FROM bxbatch.trigger_install
