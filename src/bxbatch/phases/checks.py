"""A preflight check's result (name, pass / warn / fail, the reason in words) and how lists in reasons are shortened."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PASS, WARN, FAIL = "pass", "warn", "fail"


@dataclass
class Check:
    name: str
    status: str  # pass | warn | fail
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)


def shown(items: list[str], limit: int = 6) -> str:
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")
