-- bxbatch: job=activity_seed source=user_tables target=database_activitylog reconcile=false
-- One 'row_created' entry in database_activitylog per existing row of every user table
-- database_table_<id> (guide, Phase 4, seeding what the activity trigger cannot see).
-- Rows with id <= the table's high-water mark (bxbatch.trigger_install, taken when the
-- trigger went in) are seeded here; later rows are logged by the trigger, so no row is
-- logged twice. The entry has the shape the trigger writes: user_id NULL (no
-- application user did this), details = {"row_data": <the row as JSON>}.
-- timestamp = the row's created_on; a row with no created_on gets now(), as a trigger
-- entry would: the row certainly existed by then, and its row_data shows created_on null.
--
-- A chunk is a list of segments (table, lo, hi]: one segment of a huge table, or many
-- small tables in one statement (UNION ALL), so tiny tables do not cost a round trip
-- each. {segments} is replaced by the segments joined with UNION ALL; in a segment,
-- {table} is the quoted table name (db.quote_ident) and {i} the segment's 1-based index
-- into the arrays $1 (table ids), $2 (lo) and $3 (hi).
-- The activity log has no unique key, so ON CONFLICT cannot guard it: exactly-once rests
-- on the chunk and its ledger row committing in one transaction.

-- name: chunk
INSERT INTO database_activitylog (user_id, table_id, row_id, action_type, details, "timestamp")
{segments}

-- name: segment
SELECT NULL::integer, ($1::integer[])[{i}], r.id, 'row_created',
       jsonb_build_object('row_data', to_jsonb(r)), coalesce(r.created_on, now())
FROM {table} AS r
WHERE r.id > ($2::bigint[])[{i}] AND r.id <= ($3::bigint[])[{i}]

