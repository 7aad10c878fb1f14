"""The phases of a run, each a coroutine over a RunContext; ``app`` runs them in order."""
