"""The safety net's part of `bxbatch status`: the last backup (or why there is none) and rollback progress."""

from __future__ import annotations

from typing import Any

import asyncpg

from bxbatch.ledger.safety import safety_state


async def status_section(conn: asyncpg.Connection) -> dict[str, Any]:
    backup, steps = await safety_state(conn)
    return {"backup": backup, "rollback_steps_done": steps}


def render_status_lines(report: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    backup = report.get("backup")
    if backup and backup["status"] == "verified":
        lines.append(
            f"backup: verified {backup['path']} ({(backup['bytes'] or 0) / 1024**2:.1f} MiB, "
            f"{backup['toc_entries']} entries, taken {backup['taken_at']:%Y-%m-%d %H:%M:%S})"
        )
    elif backup:
        lines.append(f"backup: skipped ({backup['reason']})")
    if report.get("rollback_steps_done"):
        lines.append(
            f"rollback: {report['rollback_steps_done']} steps done, unfinished: `bxbatch rollback --yes` continues"
        )
    return lines
