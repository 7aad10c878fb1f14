"""The phases of a run, each a coroutine over a RunContext; ``ops.run`` runs them in order."""

# The phases of a run, in order (ops/run.py pairs each with its coroutine; plan and status read the names).
PHASE_ORDER = ("preflight", "backup", "schema", "triggers", "backfill", "indexes", "constraints", "validate", "cleanup")
