"""RunContext: what every phase receives (settings, the main connection, the run id, a logger)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg

from bxbatch.migrations.profile import GUIDE, Profile
from bxbatch.settings import Settings


@dataclass
class RunContext:
    settings: Settings
    conn: asyncpg.Connection  # the run's own connection (ledger writes, DDL); workers use a pool
    run_id: int
    log: Any
    profile: Profile = GUIDE
    summary: dict[str, Any] = field(default_factory=dict)  # phase name -> figures for the final report
