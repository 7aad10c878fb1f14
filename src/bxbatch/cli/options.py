"""Option groups shared by several commands: one list of (Settings field, type, default, typer.Option) each.

``settings_options(GROUP)`` appends a group's options to a typer command's signature (typer reads
it), takes their values out before the command body runs and hands them to ``cli._settings``
through ``overrides()``. Groups stack: `run` and `resume` carry the engine, live-safety and
backup/preflight groups without repeating a single parameter.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from contextvars import ContextVar
from typing import Annotated, Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

OptionSpec = tuple[str, Any, Any, Any]  # (Settings field, type, default, typer.Option)

_OVERRIDES: ContextVar[dict[str, Any] | None] = ContextVar("bxbatch_cli_overrides", default=None)


def settings_options(specs: list[OptionSpec]) -> Callable[[F], F]:
    fields = [name for name, *_ in specs]

    def decorate(fn: F) -> F:
        base = inspect.signature(fn, eval_str=True)
        params = list(base.parameters.values())
        extra = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[type_, opt])
            for name, type_, default, opt in specs
        ]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in fields if name in kwargs}
            token = _OVERRIDES.set({**(_OVERRIDES.get() or {}), **values})
            try:
                return fn(*args, **kwargs)
            finally:
                _OVERRIDES.reset(token)

        wrapper.__signature__ = base.replace(parameters=params + extra)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params + extra} | {"return": base.return_annotation}
        del wrapper.__wrapped__  # typer must read the signature above, not the wrapped function's
        return wrapper  # type: ignore[return-value]

    return decorate


def overrides() -> dict[str, Any]:
    """The option-group values of the command being run ({} for commands without groups)."""
    return dict(_OVERRIDES.get() or {})
