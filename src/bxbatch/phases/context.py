"""RunContext: what every phase receives (settings, the migration, the main connection, the run id, a logger)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg

from bxbatch.migrations.loader import Migration, load_migration
from bxbatch.migrations.profile import Profile
from bxbatch.settings import Settings


@dataclass
class RunContext:
    settings: Settings
    conn: asyncpg.Connection  # the run's own connection (ledger writes, DDL); workers use a pool
    run_id: int
    log: Any
    migration: Migration = None  # type: ignore[assignment]  # None: the one settings.migration names
    summary: dict[str, Any] = field(default_factory=dict)  # phase name -> figures for the final report

    def __post_init__(self) -> None:
        if self.migration is None:
            self.migration = load_migration(self.settings.migration)

    @property
    def profile(self) -> Profile:
        return self.migration.profile
