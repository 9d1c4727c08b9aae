"""What a measured run cost the machine in CPU, and what the machine can give at a target rate.

A ratio to the parse floor says how fast; the CPU per session says why: when the processes of a
run (server, client) need more CPU per session than the machine's cores can give at the target
rate, no overlap of their work reaches the target here. Read from /proc (Linux).
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """User and system CPU of a process and of its live descendants (uvicorn workers), so far."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended meanwhile
        if int(stat.parent.name) == pid or _descends(int(fields[1]), pid):
            total += (int(fields[11]) + int(fields[12])) / _TICKS
    return total


def _descends(parent: int, ancestor: int) -> bool:
    while parent > 1:
        if parent == ancestor:
            return True
        try:
            parent = int((Path("/proc") / str(parent) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError):
            return False
    return False


def own_cpu_seconds() -> float:
    """User and system CPU of this process (all its threads) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def budget(sessions: int, server_s: float, client_s: float, target_rate: float) -> str:
    """CPU per session of the run beside what the cores give per session at ``target_rate``."""
    server, client = server_s / sessions * 1e6, client_s / sessions * 1e6
    cores = os.cpu_count() or 1
    available = cores / target_rate * 1e6
    verdict = "within" if server + client <= available else "over"
    return (
        f"CPU per session: server {server:.0f} µs + client {client:.0f} µs = {server + client:.0f} µs;"
        f" at the target ({target_rate:,.0f} sessions/s) {cores} core(s) give {available:.0f} µs ({verdict})"
    )
