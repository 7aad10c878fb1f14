"""`bxbatch pause | continue | cancel | set KEY=VALUE | hold-before PHASE | release`: control a run from any host."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from bxbatch.cli.app import command
from bxbatch.cli.options import BASIC, Flags
from bxbatch.cli.signals import drive
from bxbatch.errors import UsageError
from bxbatch.settings import Settings

ControlSettings = Annotated[Settings, Flags(*BASIC)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _send(settings: Settings, as_json: bool, action: str, **kw: Any) -> None:
    from bxbatch.live.control import send

    result = drive(lambda: send(settings, action, **kw), settings.stop_grace_s)
    if as_json:
        print(json.dumps(result))
        return
    knobs = ", ".join(f"{k}={v}" for k, v in (result.get("knobs") or {}).items())
    hold = f", held before phase {result['hold_before']}" if result.get("hold_before") else ""
    print(
        f"run #{result['run_id']} ({result['run_status']}): {result['state']}{hold}"
        + (f"; live settings: {knobs}" if knobs else "")
        + "; obeyed within a second (backfill workers before their next chunk, other phases before the next phase)"
    )


@command()
def pause(settings: ControlSettings, as_json: JsonOpt = False) -> None:
    """Pause the running migration: every worker (on every host) stops after its chunk in flight."""
    _send(settings, as_json, "pause")


@command("continue")
def continue_(settings: ControlSettings, as_json: JsonOpt = False) -> None:
    """Continue a paused migration."""
    _send(settings, as_json, "continue")


@command()
def cancel(settings: ControlSettings, as_json: JsonOpt = False) -> None:
    """Stop the running migration after its chunks in flight; it exits 75 and `bxbatch resume` continues it."""
    _send(settings, as_json, "cancel")


@command("set")
def set_(
    assignments: Annotated[
        list[str],
        typer.Argument(
            help="KEY=VALUE, one or more: concurrency (at most what the run started with), target_chunk_ms, "
            "min_chunk_rows, max_chunk_rows, max_rows_per_second (0: no limit), throttle (on/off), "
            "max_blocked_sessions, max_replication_lag_bytes, max_replication_lag_s, max_wal_bytes_per_second, "
            "max_xmin_age_s, max_active_backends, critical_factor, probe_max_ratio.",
            show_default=False,
        ),
    ],
    settings: ControlSettings,
    as_json: JsonOpt = False,
) -> None:
    """Change a running migration's settings: `bxbatch set concurrency=2 max_rows_per_second=500`.

    Every process of the run applies them within a second. A value the run cannot honour is refused
    (exit 2), never clamped. A new attempt (`resume`) starts again from its own options.
    """
    from bxbatch.live.control import parse_assignments

    parse_assignments(assignments)  # each value within its knob's range, before connecting
    _send(settings, as_json, "set", assignments=assignments)


@command("hold-before")
def hold_before(
    phase: Annotated[
        str,
        typer.Argument(
            help="indexes, constraints, validate, cleanup (or any later phase).", metavar="PHASE", show_default=False
        ),
    ],
    settings: ControlSettings,
    as_json: JsonOpt = False,
) -> None:
    """Make the run wait before PHASE starts (like gh-ost's postponed cut-over) until `bxbatch release`.

    Holding before `indexes` also holds the index builds the backfill phase starts early (a build
    already running finishes)."""
    from bxbatch.ops.status import PHASE_ORDER

    if phase not in PHASE_ORDER[1:]:
        raise UsageError(f"no phase {phase!r} to hold before", hint="one of " + ", ".join(PHASE_ORDER[1:]))
    _send(settings, as_json, "hold", phase=phase)


@command()
def release(settings: ControlSettings, as_json: JsonOpt = False) -> None:
    """Lift `bxbatch hold-before`: the run goes on with the phase it waits before."""
    _send(settings, as_json, "release")
