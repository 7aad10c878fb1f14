-- bxbatch: job=enhanced_views source=table key_table=database_view key_column=id
-- bxbatch: target=database_tableview_enhanced reconcile=true extra_param=grid_view_type
-- bxbatch: changes=database_view.id
-- One database_tableview_enhanced row per grid view (guide, Phase 3, "View Enhancement
-- Migration"), with the guide's defaults. Chunked over database_view.id: a chunk covers
-- the views with $1 < id <= $2. $3 is the grid view type ('table' in the guide profile).
-- ON CONFLICT DO NOTHING is the second line of defence; the first is the ledger row that
-- commits in the same transaction as the chunk.

-- name: chunk
INSERT INTO database_tableview_enhanced
    (view_ptr_id, sticky_headers, conditional_formatting, column_grouping, filter_presets)
SELECT v.id, TRUE, '[]'::jsonb, '[]'::jsonb, '[]'::jsonb
FROM database_view AS v
WHERE v.id > $1 AND v.id <= $2 AND v.type = $3
ORDER BY v.id
ON CONFLICT (view_ptr_id) DO NOTHING

-- name: reconcile
-- Within ($1, $2]: delete the rows whose view is gone or no longer a grid view (a type
-- change; a deleted view cascades already), insert the grid views that have none (new
-- views in ranges done earlier, type changes). Returns the rows changed.
WITH gone AS (
    DELETE FROM database_tableview_enhanced AS e
    WHERE e.view_ptr_id > $1 AND e.view_ptr_id <= $2
      AND NOT EXISTS (SELECT 1 FROM database_view AS v WHERE v.id = e.view_ptr_id AND v.type = $3)
    RETURNING 1
), added AS (
    INSERT INTO database_tableview_enhanced
        (view_ptr_id, sticky_headers, conditional_formatting, column_grouping, filter_presets)
    SELECT v.id, TRUE, '[]'::jsonb, '[]'::jsonb, '[]'::jsonb
    FROM database_view AS v
    WHERE v.id > $1 AND v.id <= $2 AND v.type = $3
      AND NOT EXISTS (SELECT 1 FROM database_tableview_enhanced AS e WHERE e.view_ptr_id = v.id)
    ORDER BY v.id
    ON CONFLICT (view_ptr_id) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone) + (SELECT count(*) FROM added)

-- name: main_bound
SELECT coalesce(max(id), 0) FROM database_view

-- name: reconcile_bound
SELECT greatest(
    (SELECT coalesce(max(id), 0) FROM database_view),
    (SELECT coalesce(max(view_ptr_id), 0) FROM database_tableview_enhanced))

-- name: expected
SELECT count(*) FROM database_view WHERE type = $1

-- name: set_based
-- The guide's single statement, for tests and benchmarks (made idempotent).
INSERT INTO database_tableview_enhanced
    (view_ptr_id, sticky_headers, conditional_formatting, column_grouping, filter_presets)
SELECT id, TRUE, '[]'::jsonb, '[]'::jsonb, '[]'::jsonb
FROM database_view
WHERE type = $1
ON CONFLICT (view_ptr_id) DO NOTHING
