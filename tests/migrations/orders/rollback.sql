-- Rollback guards of the orders migration: $1 = the end of the last run.

-- name: totals_after
SELECT count(*) FROM customer_totals WHERE updated_at > $1
