"""Run a command with its standard error on a pseudo-terminal (what a user at a shell sees:
rich draws its progress bars only there)."""

from __future__ import annotations

import os
import pty
import subprocess
from pathlib import Path


def on_a_terminal(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
                  timeout: float = 120) -> tuple[int, str, str]:
    """(exit code, what the terminal showed, standard output)."""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=follower,
                                stdin=subprocess.DEVNULL, cwd=cwd,
                                env={**os.environ, **(env or {}), "COLUMNS": "100",
                                     "TERM": "xterm"})
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        stdout = proc.stdout.read().decode() if proc.stdout else ""
        code = proc.wait(timeout=timeout)
    finally:
        os.close(leader)
    return code, b"".join(chunks).decode(errors="replace"), stdout
