"""The machine a figure was measured on: CPU model and cores (tools/ print and record them)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpuinfo() -> str:
    """/proc/cpuinfo ("" where there is none)."""
    path = Path("/proc/cpuinfo")
    return path.read_text() if path.exists() else ""


def cpu_model() -> str:
    """The CPU's model name, which the figures depend on: runs differ in it."""
    for line in cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def machine() -> dict[str, str | int]:
    """CPU model, cores this process may use, platform: what a recorded figure names."""
    return {
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "platform": platform.platform(),
    }
