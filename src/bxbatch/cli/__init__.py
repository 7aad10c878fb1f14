"""The `bxbatch` command line: typer commands over the library, one error boundary, options from Settings."""

from bxbatch.cli.commands import app, main

__all__ = ["app", "main"]
