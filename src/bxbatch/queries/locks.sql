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
