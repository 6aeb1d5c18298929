"""Running commands on the machine, and the command line that enters a fake host."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from mclu.sandbox import config
from mclu.sandbox.errors import SandboxError


def run(argv: Sequence[str | Path], *, timeout: float = 30.0, stdin: str | None = None) -> str:
    """Run a command, return stdout; failures become a one-line SandboxError."""
    args = [str(a) for a in argv]
    try:
        proc = subprocess.run(
            args, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise SandboxError(f"timed out after {timeout:.0f} s: {' '.join(args)}") from None
    if proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise SandboxError(
            f"{' '.join(args)} failed (exit {proc.returncode}): {detail[-1] if detail else ''}"
        )
    return proc.stdout


def clean_env() -> dict[str, str]:
    """Environment for processes inside a host: no pyenv shims, stand-ins first on PATH."""
    env = {"PATH": config.STD_PATH, "HOME": "/root", "LANG": "C.UTF-8"}
    for key in ("TERM", "MCLU_SANDBOX_DIR"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


def nsenter_argv(pid: int, argv: Sequence[str | Path]) -> list[str]:
    """`argv` run inside the mount, UTS and network namespaces of the anchor `pid`."""
    return [
        "nsenter",
        f"--target={pid}",
        "--mount",
        "--uts",
        "--net",
        "--wd=/",
        "--",
        *(str(a) for a in argv),
    ]
