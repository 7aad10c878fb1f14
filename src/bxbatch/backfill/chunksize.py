"""Adaptive chunk size: how many keys the next chunk should cover to last about ``target_ms``.

The model is a per-key cost: each committed chunk reports (keys planned, seconds). The size
aims at ``target / cost`` where cost is the *median* per-key cost of the last ``window`` chunks,
so one chunk slowed by something other than its size (a lock wait, a checkpoint, a noisy
neighbour) moves nothing; a sustained change moves the median within a few chunks. Each step
is clamped to ``max_step`` times (or 1/``max_step`` of) the current size, so a wild estimate
cannot jump straight to the floor or the ceiling, yet from the initial size any target inside
[floor, ceiling] is reached within ~20 chunks (2x per step covers a 1000x range in 10 steps).
Chunks that are far too fast do not get a vote on a shrink of the size and vice versa: the
clamp is on the size, the median is on the cost.

A key can yield many rows (a member: one permission per table of each of its workspaces), and
how many varies from key to key by 1000x on real installs, so a per-key cost cannot bound a
chunk. The sizer therefore also learns the median cost per *row written* and offers a row budget
(``row_budget``): the planner ends each range where its rows reach it (the job's ``cut``
statement), down to a single key.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field


@dataclass
class ChunkSizer:
    target_ms: float
    floor: int
    ceiling: int
    size: int
    window: int = 7
    max_step: float = 2.0
    _costs: deque[float] = field(default_factory=deque, repr=False)
    _part_costs: dict[int, deque[float]] = field(default_factory=dict, repr=False)
    _row_costs: deque[float] = field(default_factory=deque, repr=False)
    observations: int = 0
    initial_rows: int | None = None  # --initial-chunk-rows: the row budget before any measurement

    def __post_init__(self) -> None:
        if not 1 <= self.floor <= self.ceiling:
            raise ValueError("chunk size floor/ceiling must satisfy 1 <= floor <= ceiling")
        self.size = self._clamp(self.size)
        if self.initial_rows is None:
            self.initial_rows = self.size

    @classmethod
    def from_settings(cls, settings: object) -> ChunkSizer:
        return cls(
            target_ms=float(settings.target_chunk_ms),  # type: ignore[attr-defined]
            floor=int(settings.min_chunk_rows),  # type: ignore[attr-defined]
            ceiling=int(settings.max_chunk_rows),  # type: ignore[attr-defined]
            size=int(settings.initial_chunk_rows),  # type: ignore[attr-defined]
        )

    def retarget(self, settings: object) -> None:
        """Adopt changed chunk settings at once (live knobs): the next chunk is sized for the new target."""
        target = float(settings.target_chunk_ms)  # type: ignore[attr-defined]
        floor, ceiling = int(settings.min_chunk_rows), int(settings.max_chunk_rows)  # type: ignore[attr-defined]
        if (target, floor, ceiling) == (self.target_ms, self.floor, self.ceiling):
            return
        self.target_ms, self.floor, self.ceiling = target, floor, ceiling
        median = self.per_key_ms
        self.size = self._clamp(self.target_ms / max(median, 1e-9) if median is not None else self.size)

    def _clamp(self, value: float) -> int:
        return int(max(self.floor, min(self.ceiling, round(value))))

    @property
    def per_key_ms(self) -> float | None:
        return statistics.median(self._costs) if self._costs else None

    @property
    def per_row_ms(self) -> float | None:
        return statistics.median(self._row_costs) if self._row_costs else None

    def row_budget(self, scale: float = 1.0, share: int = 1) -> int:
        """Rows a chunk may write to last about ``target_ms`` (within [floor, ceiling], in rows).

        Before any measured row: the initial size split over ``share`` chunks (the lookahead), as
        the planner splits the initial key size.
        """
        per_row = self.per_row_ms
        if per_row is None:
            return self._clamp(max(1, (self.initial_rows or self.size) // max(1, share)) * max(scale, 0.0))
        return self._clamp(self.target_ms / max(per_row, 1e-9) * max(scale, 0.0))

    def observe(self, keys: int, seconds: float, part: int | None = None, rows: int | None = None) -> int:
        """Record one committed chunk; returns the new size.

        ``part``: the one part (user table) the chunk covered, if it covered only one. Tables of one
        job differ in cost per key (a wide table's rows make bigger JSON), so the chunks of a big
        table are sized from that table's own median cost once it has one (``size_for``).
        ``rows``: the rows the chunk wrote (None for a reconcile chunk, whose count is of rows
        *changed*, not read): feeds the cost per row behind ``row_budget``.
        """
        if keys <= 0 or seconds <= 0:
            return self.size  # an empty chunk says nothing about the cost of a key
        if rows is not None and rows > 0:
            self._row_costs.append(seconds * 1000.0 / rows)
            while len(self._row_costs) > self.window:
                self._row_costs.popleft()
        self.observations += 1
        cost = seconds * 1000.0 / keys
        self._costs.append(cost)
        while len(self._costs) > self.window:
            self._costs.popleft()
        if part is not None:
            own = self._part_costs.setdefault(part, deque())
            own.append(cost)
            while len(own) > self.window:
                own.popleft()
        median = self.per_key_ms
        assert median is not None
        ideal = self.target_ms / max(median, 1e-9)
        low, high = self.size / self.max_step, self.size * self.max_step
        self.size = self._clamp(min(high, max(low, ideal)))
        return self.size

    def size_for(self, part: int | None, scale: float = 1.0) -> int:
        """The size for a chunk starting in ``part``: from the part's own cost when it has one."""
        own = self._part_costs.get(part) if part is not None else None
        if own:
            return self._clamp(self.target_ms / max(statistics.median(own), 1e-9) * max(scale, 0.0))
        return self.next_size(scale)

    def next_size(self, scale: float = 1.0) -> int:
        """The size to plan now, times the throttle's multiplier (never below the floor)."""
        return self._clamp(self.size * max(scale, 0.0)) if scale != 1.0 else self.size
