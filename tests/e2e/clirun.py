"""Run the real `bxbatch` console script as a subprocess, as an operator would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BXBATCH = str(Path(sys.executable).with_name("bxbatch"))


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BXBATCH_", "PG")) and k != "DATABASE_URL"}
    env.update(extra)
    return env


def run_cli(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BXBATCH, *args], capture_output=True, text=True, timeout=timeout, env=cli_env(**env), check=False
    )


def spawn_cli(*args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [BXBATCH, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(**env)
    )
