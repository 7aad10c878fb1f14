"""tqdm progress bars on stderr: off when stderr is not a terminal or with --no-progress."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

from .settings import Settings


def enabled(settings: Settings) -> bool:
    return settings.progress and sys.stderr.isatty()


def bar(settings: Settings, total: int | None, desc: str, unit: str = "row", **kwargs: Any) -> tqdm:
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=True,
        dynamic_ncols=True,
        file=sys.stderr,
        disable=not enabled(settings),
        leave=True,
        **kwargs,
    )
