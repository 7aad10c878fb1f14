"""tqdm progress bars on stderr: off when stderr is not a terminal or with --no-progress.

Bars vanish when they close (``leave=False``): the log line or summary that follows says what
was done, and no half-drawn bar is left in the scrollback. Log lines go through ``tqdm.write``
(log.py), so they never land in the middle of a bar.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

from bxbatch.settings import Settings

SCALE_FROM = 10_000  # below this, counts are shown as plain integers (43/43, not 43.0/43.0)


def enabled(settings: Settings) -> bool:
    return settings.progress and sys.stderr.isatty()


def another_open(mine: Any = None) -> bool:
    """Whether a bar other than ``mine`` is drawn now. An index build's bar gives way to it: bars share
    the terminal one at a time (two at once left stale copies on the screen as they moved)."""
    return any(b is not mine and not b.disable for b in list(getattr(tqdm, "_instances", ())))


def bar(settings: Settings, total: int | None, desc: str, unit: str = "row", **kwargs: Any) -> tqdm:
    scale = total is None or total >= SCALE_FROM
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=scale,
        dynamic_ncols=True,
        file=sys.stderr,
        disable=not enabled(settings),
        leave=False,
        position=0,  # one line: a bar opened while another shows takes its line, not the next
        **kwargs,
    )
