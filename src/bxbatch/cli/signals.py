"""SIGINT/SIGTERM for a CLI command: the first stops the run gracefully (exit 75), the second exits at once.

First signal: ``live.stopping.request_stop`` tells the engine (chunks in flight commit or roll
back). With no engine at work (DDL, index builds), or when the in-flight chunks outlast
``stop_grace_s``, the main task is cancelled instead: asyncpg cancels the server query, the
transaction rolls back, and the run is still recorded as interrupted by shielded, time-bounded
cleanup. Second signal: exit at once (75); the ledger stays consistent because every chunk
commits together with its ledger row.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from bxbatch.errors import ExitCode, Interrupted
from bxbatch.live import stopping

T = TypeVar("T")


def drive(factory: Callable[[], Awaitable[T]], grace_s: float) -> T:
    """Run one library coroutine to its end, with the signals handled as above."""
    try:
        return asyncio.run(_with_signals(factory, grace_s))
    except KeyboardInterrupt:  # a Ctrl-C before the handlers are in place or after they are gone
        raise Interrupted("interrupted; the ledger is consistent: run `bxbatch resume` to continue") from None


class _SignalStopper:
    """Acts on the signals on the running loop; tells how the run was stopped."""

    def __init__(self, grace_s: float, task: asyncio.Task[object]) -> None:
        self.grace_s = grace_s
        self.task = task
        self.signals = 0  # signals handled on the loop
        self.signals_seen = False  # a signal arrived (set by the raw handler, before the loop runs it)
        self.cancelled = False
        self._grace: asyncio.TimerHandle | None = None

    def handle(self, signum: int) -> None:
        self.signals += 1
        name = signal.Signals(signum).name
        if self.signals > 1:
            _exit_now(signum)
        sys.stderr.write(
            f"bxbatch: {name}: stopping after the chunks in flight (up to {self.grace_s:.0f}s); "
            "send it again to exit at once\n"
        )
        sys.stderr.flush()
        if stopping.request_stop(f"{name} received"):
            self._grace = asyncio.get_running_loop().call_later(self.grace_s, self._cancel)
        else:
            self._cancel()

    def _cancel(self) -> None:
        if not self.task.done():
            self.cancelled = True
            self.task.cancel(f"stopped by signal ({stopping.stop_requested()})")

    def close(self) -> None:
        if self._grace is not None:
            self._grace.cancel()


async def _with_signals(factory: Callable[[], Awaitable[T]], grace_s: float) -> T:
    """Plain ``signal.signal`` handlers (not the loop's): a second signal exits from the handler itself,
    whatever the loop is doing, and once a signal came they stay until the process ends, so a late
    second one never meets Python's default handler (a traceback, exit -2)."""
    stopping.reset()
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    stopper = _SignalStopper(grace_s, task)

    def on_signal(signum: int, _frame: object) -> None:
        if stopper.signals_seen:
            _exit_now(signum)
        stopper.signals_seen = True
        with contextlib.suppress(RuntimeError):  # the loop has closed: we are on our way out already
            loop.call_soon_threadsafe(stopper.handle, signum)

    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread: leave signals to whoever owns them
            previous[sig] = signal.signal(sig, on_signal)
    try:
        return await factory()
    except asyncio.CancelledError:
        if not stopper.cancelled:
            raise
        task.uncancel()
        raise Interrupted(
            f"stopped by {stopping.stop_requested()}; work in flight was rolled back",
            hint="run `bxbatch resume` to continue",
        ) from None
    finally:
        stopper.close()
        if not stopper.signals_seen:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def _exit_now(signum: int) -> None:
    name = signal.Signals(signum).name
    sys.stderr.write(f"bxbatch: second {name}: exiting now; `bxbatch resume` continues the run\n")
    sys.stderr.flush()
    os._exit(int(ExitCode.RESUMABLE))
