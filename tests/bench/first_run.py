"""`make demo` from a fresh clone: a new user's first five minutes, installation included.

Clones the committed tree into a temporary directory and times `make demo` there, which
creates the virtual environment, installs the project (from the package index, or pip's
cache when this machine has one) and runs the demo. Target: under five minutes.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parents[2]
TARGET_S = 300.0


def run(quick: bool) -> str:
    with tempfile.TemporaryDirectory(prefix="bench-first-run-") as scratch:
        clone = Path(scratch) / "transcriber"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        started = time.perf_counter()
        done = subprocess.run(
            ["make", "demo"], cwd=clone, capture_output=True, text=True, check=False
        )
        seconds = time.perf_counter() - started
    verdict = "meets" if done.returncode == 0 and seconds < TARGET_S else "MISSES"
    row = f"| `make demo` in a fresh clone | {seconds:.0f} s | exit {done.returncode} | {verdict} |"
    print(row, flush=True)
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:])
    return "\n".join(
        [
            "## First run (`make demo` from a fresh clone)",
            "",
            "Wall time of `make demo` in a new clone of the committed tree: virtual "
            "environment, installation with pip (its cache as this machine has it), the "
            f"embedded stack and the demo itself. Target: under {TARGET_S / 60:.0f} minutes.",
            "",
            "| What | Wall time | Result | Target |",
            "| --- | ---: | --- | --- |",
            row,
            "",
            "Reproduce: `make bench` (this section alone, printed: "
            "`python -m tests.bench.run --only first_run`).",
        ]
    )
