"""A description of the machine a benchmark ran on, for docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


def _postgres_version() -> str:
    try:
        done = subprocess.run(
            ["psql", "--version"], capture_output=True, text=True, check=False, timeout=10
        )
    except OSError:
        return "psql not found"
    return done.stdout.strip() or "unknown"


def describe() -> str:
    """A few lines of Markdown: when, where, with what."""
    return "\n".join(
        [
            f"- Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
            f"- CPU: {_cpu_model()}, {os.cpu_count()} cores available",
            f"- Memory: {_memory_gib():.0f} GiB",
            f"- OS: {platform.platform()}",
            f"- Python {platform.python_version()}; {_postgres_version()} (local server)",
        ]
    )
