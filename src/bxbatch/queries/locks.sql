-- The server's lock table and the user tables' index counts, for the lock budget (locks.py).
-- Loaded by sqlfiles.queries("locks").

-- name: lock_settings
-- $1 = the profile's schema, $2 = the user-table name regex. Indexes per user table on average (a user table costs a lock for
-- itself and one per index in every statement planned on it): catalog only, no table is locked.
SELECT current_setting('max_locks_per_transaction')::int AS max_locks_per_transaction,
       current_setting('max_connections')::int AS max_connections,
       current_setting('max_prepared_transactions')::int AS max_prepared_transactions,
       (SELECT avg(n) FROM (
            SELECT (SELECT count(*) FROM pg_index i WHERE i.indrelid = c.oid) AS n
            FROM pg_class c
            WHERE c.relnamespace = to_regnamespace($1) AND c.relkind IN ('r', 'p')
              AND c.relname ~ $2
        ) s) AS indexes_per_table

-- name: cancel_autovacuum
-- $1 = a table's regclass (text). Cancels the autovacuum workers holding a lock on it, except one that
-- runs to prevent wraparound, and returns their pids. PostgreSQL does the same itself to an
-- autovacuum that blocks a lock request, but only after deadlock_timeout (1 s by default): bxbatch
-- does it just before it alters or builds on a table it has just filled, where a worker started
-- by the load is certain to be in the way, and whose statistics and visibility map its own ANALYZE and
-- the cleanup phase's VACUUM produce anyway.
SELECT a.pid, pg_cancel_backend(a.pid) AS cancelled
FROM pg_stat_activity AS a
WHERE a.backend_type = 'autovacuum worker'
  AND a.query NOT LIKE '%to prevent wraparound%'
  AND EXISTS (SELECT 1 FROM pg_locks AS l
              WHERE l.pid = a.pid AND l.locktype = 'relation' AND l.relation = to_regclass($1))
