"""Crashing the embedded stores the way the OOM killer or a crash would: SIGKILL, no shutdown. Used by the
supervision tests and by bench/faults.py."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil


def kill_embedded_redis(data_dir: Path) -> None:
    os.kill(int((data_dir / "redis" / "redis.pid").read_text()), signal.SIGKILL)


def kill_embedded_postgres(data_dir: Path) -> None:
    """The whole server at once: postmaster and backends."""
    postmaster = psutil.Process(int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0]))
    processes = [postmaster, *postmaster.children(recursive=True)]
    for process in processes:
        process.kill()
    psutil.wait_procs(processes, timeout=10)
