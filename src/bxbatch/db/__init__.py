"""PostgreSQL access: connections and sessions, DSNs, SQL files and named queries, retries, the lock budget."""
