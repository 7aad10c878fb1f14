"""Pass sequencing without a database: a fake engine stands in for the ledger and the workers.

The sequence must be a pure function of the passes' results (a resumed run, or a second process,
replays it): main, catch-ups until one finds no new key, then settle rounds (a catch-up, and a
reconcile for jobs that have one) until a whole round changes no row, at most MAX_SETTLE_ROUNDS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio

from bxbatch.backfill.engine import PassResult
from bxbatch.backfill.passes import MAX_SETTLE_ROUNDS, Sequencer
from bxbatch.migrations.jobs import Job
from bxbatch.migrations.loader import load_migration
from bxbatch.settings import Settings


def _job(name: str, reconcile: bool) -> Job:
    return Job(
        name=name,
        order=1,
        file=f"{name}.sql",
        sha256="0",
        source="table",
        target="",  # no target: the settle rounds skip ANALYZE, which needs a server
        key_table="t",
        key_column="id",
        reconcile=reconcile,
        extra_param=None,
        statements={},
    )


class _Log:
    def __getattr__(self, _name: str) -> Any:
        return lambda *a, **k: None


@dataclass
class FakeEngine:
    """Answers run_pass from a script: (job, kind) -> list of (parts, hi, rows), consumed in order."""

    script: dict[tuple[str, str], list[tuple[int, int | None, int]]]
    calls: list[tuple[str, int, str, int, int]] = field(default_factory=list)
    conn_lock: anyio.Lock = field(default_factory=anyio.Lock)
    ledger: Any = None
    conn: Any = None
    settings: Settings = field(default_factory=Settings)
    run_id: int = 1
    log: Any = field(default_factory=_Log)
    profile: Any = load_migration().profile

    async def run_pass(self, job: Job, seq: int, kind: str, round_: int, after: int = 0) -> PassResult:
        self.calls.append((job.name, seq, kind, round_, after))
        steps = self.script.get((job.name, kind), [])
        parts, hi, rows = steps.pop(0) if steps else (0, None, 0)
        return PassResult(seq, kind, round_, parts, 0 if hi is not None else None, hi, rows, 1, 0)


def _sequencer(engine: FakeEngine) -> Sequencer:
    return Sequencer(engine)  # type: ignore[arg-type]  # the fake has what the sequencer reads


async def test_main_then_catchups_until_one_finds_nothing() -> None:
    job = _job("views", reconcile=False)
    engine = FakeEngine({("views", "main"): [(1, 100, 100)], ("views", "catchup"): [(1, 130, 30), (1, 131, 1)]})
    next_seq, bound = await _sequencer(engine).main_and_catchup(job)
    assert engine.calls == [
        ("views", 0, "main", 0, 0),
        ("views", 1, "catchup", 0, 100),
        ("views", 2, "catchup", 0, 130),
        ("views", 3, "catchup", 0, 131),
    ]
    assert (next_seq, bound) == (4, 131)


async def test_settle_rounds_stop_at_the_first_round_that_changes_nothing() -> None:
    plain, reconciled = _job("a", reconcile=False), _job("b", reconcile=True)
    engine = FakeEngine({("b", "reconcile"): [(1, 50, 7)], ("a", "catchup"): [(1, 210, 3)]})
    rounds, converged = await _sequencer(engine).settle([plain, reconciled], {"a": 5, "b": 2}, {"a": 200, "b": 50})
    assert (rounds, converged) == (2, True)
    assert engine.calls == [
        ("a", 5, "catchup", 1, 200),
        ("b", 2, "catchup", 1, 50),
        ("b", 3, "reconcile", 1, 0),
        ("a", 6, "catchup", 2, 210),  # round 1 moved a's bound
        ("b", 4, "catchup", 2, 50),
        ("b", 5, "reconcile", 2, 0),
    ]


async def test_settle_gives_up_after_max_rounds_when_writes_never_stop() -> None:
    job = _job("b", reconcile=True)
    engine = FakeEngine({("b", "reconcile"): [(1, 10, 1)] * (MAX_SETTLE_ROUNDS + 5)})
    rounds, converged = await _sequencer(engine).settle([job], {"b": 1}, {"b": 10})
    assert (rounds, converged) == (MAX_SETTLE_ROUNDS, False)
    assert len(engine.calls) == 2 * MAX_SETTLE_ROUNDS
