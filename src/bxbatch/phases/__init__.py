"""The phases of a run, each a coroutine over a RunContext; ``ops.run`` runs them in order."""
