"""Run the benchmarks and write docs/benchmarks.md (``make bench``).

``--quick`` runs each at a small size; ``--only NAME`` runs one benchmark. Both only print:
the document is written by a full run, so that every figure in it comes from one run.
"""

from __future__ import annotations

import argparse
import importlib
import traceback
from pathlib import Path

from tests.bench import machine

BENCHMARKS = [
    "sensors_load",
    "first_run",
    "ingest_rate",
    "overhead",
    "memory",
    "scaling",
    "accuracy",
    "packing",
    "sql_at_size",
]
OUTPUT = Path(__file__).parents[2] / "docs" / "benchmarks.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes; print, do not write")
    parser.add_argument("--only", choices=BENCHMARKS, action="append")
    args = parser.parse_args()
    sections = []
    failed: list[str] = []
    for name in args.only or BENCHMARKS:
        print(f"== {name}", flush=True)
        module = importlib.import_module(f"tests.bench.{name}")
        try:
            sections.append(module.run(quick=args.quick))
        except Exception:
            # One benchmark that breaks must not cost the figures of the others: its section
            # says what broke, and the run goes on.
            failure = traceback.format_exc()
            print(failure, flush=True)
            failed.append(name)
            sections.append(f"## {name}\n\nThis benchmark failed:\n\n```\n{failure}```")
    document = "\n\n".join(
        [
            "# Benchmarks",
            "Written by `make bench`; every figure below comes from one run of it.",
            "## Machine\n\n" + machine.describe(),
            *sections,
        ]
    )
    if args.quick or args.only:
        print(document)
    else:
        OUTPUT.write_text(document + "\n")
        print(f"wrote {OUTPUT}")
    if failed:
        raise SystemExit(f"benchmarks that failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
