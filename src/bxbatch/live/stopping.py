"""Stopping is a state: SIGINT/SIGTERM handling for a CLI process.

First signal: every registered throttle stops handing out chunks (chunks in flight commit or
roll back), and the run ends ``interrupted`` with exit code 75. With no engine at work (DDL,
index builds), or when the in-flight chunks outlast ``stop_grace_s``, the main task is
cancelled instead: asyncpg cancels the server query, the transaction rolls back, and the run is
still recorded as interrupted by shielded, time-bounded cleanup. Second signal: exit at once
(75); the ledger stays consistent because every chunk commits together with its ledger row.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from bxbatch.errors import ExitCode, Interrupted

T = TypeVar("T")


class Stoppable(Protocol):
    def request_stop(self, reason: str) -> None: ...


_registered: list[Stoppable] = []
_stop_reason: str | None = None  # set by the first signal; a throttle registered later stops at once


@contextmanager
def registered(target: Stoppable) -> Iterator[None]:
    """While the engine works, the first signal stops ``target`` gracefully instead of cancelling."""
    _registered.append(target)
    if _stop_reason is not None:
        target.request_stop(_stop_reason)
    try:
        yield
    finally:
        _registered.remove(target)


def stop_requested() -> str | None:
    return _stop_reason


class SignalStopper:
    """Installs the handlers on the running loop; tells how the run was stopped."""

    def __init__(self, grace_s: float, task: asyncio.Task[object]) -> None:
        self.grace_s = grace_s
        self.task = task
        self.signals = 0  # signals handled on the loop
        self.signals_seen = False  # a signal arrived (set by the raw handler, before the loop runs it)
        self.cancelled = False
        self._grace: asyncio.TimerHandle | None = None

    def handle(self, signum: int) -> None:
        global _stop_reason
        self.signals += 1
        name = signal.Signals(signum).name
        if self.signals > 1:
            _exit_now(signum)
        reason = f"{name} received"
        _stop_reason = reason
        sys.stderr.write(
            f"bxbatch: {name}: stopping after the chunks in flight (up to {self.grace_s:.0f}s); "
            "send it again to exit at once\n"
        )
        sys.stderr.flush()
        if _registered:
            for target in list(_registered):
                target.request_stop(reason)
            loop = asyncio.get_running_loop()
            self._grace = loop.call_later(self.grace_s, self._cancel)
        else:
            self._cancel()

    def _cancel(self) -> None:
        if not self.task.done():
            self.cancelled = True
            self.task.cancel(f"stopped by signal ({_stop_reason})")

    def close(self) -> None:
        if self._grace is not None:
            self._grace.cancel()


async def run_with_signals(factory: Callable[[], Awaitable[T]], grace_s: float = 30.0) -> T:
    """Run ``factory()`` with SIGINT/SIGTERM handled as above (the CLI's entry to every command).

    Plain ``signal.signal`` handlers (not the loop's): a second signal exits from the handler itself,
    whatever the loop is doing, and once a signal came they stay until the process ends, so a late
    second one never meets Python's default handler (a traceback, exit -2).
    """
    global _stop_reason
    _stop_reason = None
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    stopper = SignalStopper(grace_s, task)

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
            f"stopped by {_stop_reason}; work in flight was rolled back", hint="run `bxbatch resume` to continue"
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
