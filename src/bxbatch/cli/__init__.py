"""The `bxbatch` command line: the typer app (``cli.app``) and the command modules that register on it."""

from bxbatch.cli import control, demo, migrate, ops, report  # noqa: F401  (importing them registers their commands)
from bxbatch.cli.app import app, main

__all__ = ["app", "main"]
