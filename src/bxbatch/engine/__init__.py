"""The backfill engine: keyset planner, chunk workers on a pool, throttle and health signals."""
