-- The safety net's ledger tables (backup, rollback_step, orphan_report): owned by ledger/safety.py.
-- Loaded by sqlfiles.queries("safety_ledger").

-- name: backup_table_present
SELECT to_regclass('bxbatch.backup') IS NOT NULL

-- name: record_backup
INSERT INTO bxbatch.backup (run_id, status, path, bytes, seconds, toc_entries, pg_dump, pg_dump_version, reason)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)

-- name: last_backup
SELECT status, taken_at, path, bytes, seconds, toc_entries, pg_dump_version, reason, run_id
FROM bxbatch.backup ORDER BY id DESC LIMIT 1

-- name: rollback_steps_count
SELECT count(*) FROM bxbatch.rollback_step

-- name: insert_orphan_report
INSERT INTO bxbatch.orphan_report
    (run_id, constraint_name, table_name, columns, referenced_table, orphans, sample, duration_ms)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8)
