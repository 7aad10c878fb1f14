"""The backfill engine: keyset planner, chunk workers on a pool, passes until the target converges."""
