"""What the benchmarks here share: readings from /proc (Linux), versions, percentiles, logs."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any


def cpu_seconds(pid: int) -> float:
    """Return a process's user + system CPU seconds, all threads (0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # fields[0] is field 3 (state)
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> list[int]:
    """Return the PIDs whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def family_cpu(pid: int) -> tuple[float, float]:
    """Return the CPU seconds of a process and the sum of its children's (lanpair's
    thumbnail workers)."""
    return cpu_seconds(pid), sum(cpu_seconds(child) for child in children_of(pid))


def status_kib(pid: int, key: str, *, required: bool = False) -> int:
    """Return a kB value (VmHWM, VmRSS) from /proc/<pid>/status; 0 if absent (the process
    is gone), or with ``required`` a RuntimeError."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    if required:
        raise RuntimeError(f"no {key} for PID {pid}")
    return 0


def machine() -> dict[str, Any]:
    """Describe the machine: CPUs usable here, CPU model, load average, kernel."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "kernel": platform.release(),
    }


def versions(*packages: str) -> dict[str, str]:
    """Return Python's version and each installed package's ("?" if it is not installed)."""
    found = {"python": platform.python_version()}
    for package in packages:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "?"
    return found


def percentile(values: list[float], share: float) -> float:
    """Return the nearest-rank percentile (0 < share <= 1)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def log_tail(log: Path, lines: int = 30) -> str:
    """Return the last lines of a log file."""
    with contextlib.suppress(OSError):
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


def print_log_tail(log: Path, lines: int = 20) -> None:
    """Show the end of a server's log on stderr."""
    print(f"--- {log.name} (last lines) ---", log_tail(log, lines), sep="\n", file=sys.stderr)
