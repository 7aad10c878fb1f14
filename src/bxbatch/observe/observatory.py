"""Observability of a run: the observer the engine reports to, Prometheus metrics, the time series, history, report.

``observatory`` wraps a run's phases: it installs a ``RunObserver`` for the run's task tree,
serves ``/metrics`` when ``--metrics-port`` is given, and samples the run into the ledger's
time series (``bxbatch.sample``) until the run ends.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from bxbatch.errors import UsageError
from bxbatch.observe.observer import Observer, RunObserver, current, install, uninstall
from bxbatch.observe.timeseries import Sampler
from bxbatch.settings import Settings

__all__ = ["Observer", "RunObserver", "current", "observatory"]


@asynccontextmanager
async def observatory(settings: Settings, run_id: int, command: str, log: Any) -> AsyncIterator[RunObserver]:
    """Observe run ``run_id`` in this process while the block runs (the ledger must exist)."""
    observer = RunObserver(run_id, settings.host, os.getpid(), command)
    server = None
    if settings.metrics_port is not None:
        from bxbatch.observe.metrics import Metrics, Server

        observer.metrics = Metrics(observer)
        try:
            server = Server(observer.metrics, settings.metrics_port, settings.metrics_addr)
        except OSError as exc:
            raise UsageError(
                f"cannot serve metrics on {settings.metrics_addr}:{settings.metrics_port}: {exc.strerror or exc}",
                hint="choose a free port with --metrics-port (0: any free port, logged as metrics_serving)",
            ) from exc
        log.info("metrics_serving", addr=settings.metrics_addr, port=server.port, path="/metrics")
    token = install(observer)
    sampler = Sampler(settings, observer, log)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(sampler.run, name="sampler")
            try:
                yield observer
            finally:
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:  # the run's own error as itself, not wrapped by our task group
            raise group.exceptions[0] from None
        raise
    finally:
        await sampler.close()
        uninstall(token)
        if server is not None:
            server.close()
