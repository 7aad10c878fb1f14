"""The observability options of `run` and `resume` (metrics endpoint, report), added by ``@observe_options``.

One option group (cli_options.settings_options), like cli_safety. Every option has an env var.
"""

from __future__ import annotations

from typing import Any

import typer

from bxbatch.cli.options import settings_options

PANEL = "Observability"


def _opt(flag: str, env: str, help_: str, **kw: Any) -> Any:
    return typer.Option(flag, envvar=env, help=help_, rich_help_panel=PANEL, show_default=False, **kw)


METRICS_PORT = _opt(
    "--metrics-port",
    "BXBATCH_METRICS_PORT",
    "Serve Prometheus metrics on http://ADDR:PORT/metrics while the run lives (0: any free port, "
    "logged as metrics_serving). Each process of a shared run serves its own.",
    min=0,
    max=65535,
)
METRICS_ADDR = _opt("--metrics-addr", "BXBATCH_METRICS_ADDR", "Address the metrics endpoint listens on [0.0.0.0].")
REPORT = _opt(
    "--report",
    "BXBATCH_REPORT",
    "When the run ends (however it ends), write its self-contained HTML report here "
    "(`bxbatch report --run N` draws it again later, from any host).",
)

OBSERVE_OPTIONS: list[tuple[str, Any, Any, Any]] = [
    ("metrics_port", int | None, None, METRICS_PORT),
    ("metrics_addr", str, "0.0.0.0", METRICS_ADDR),
    ("report_path", str | None, None, REPORT),
]
observe_options = settings_options(OBSERVE_OPTIONS)
