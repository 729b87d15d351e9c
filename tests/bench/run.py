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
    "spoken_readings",
    "packing",
    "sql_at_size",
    "jobs_at_size",
]
OUTPUT = Path(__file__).parents[2] / "docs" / "benchmarks.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes; print, do not write")
    parser.add_argument("--only", choices=BENCHMARKS, action="append")
    parser.add_argument(
        "--update",
        action="store_true",
        help="with --only: replace those sections of docs/benchmarks.md, each marked as run "
        "on its own (date and machine), and keep the rest",
    )
    args = parser.parse_args()
    if args.update and not args.only:
        parser.error("--update needs --only")
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
    if args.update and not args.quick:
        _update(sections, args.only)
        print(f"updated {', '.join(args.only)} in {OUTPUT}")
    elif args.quick or args.only:
        print(document)
    else:
        OUTPUT.write_text(document + "\n")
        print(f"wrote {OUTPUT}")
    if failed:
        raise SystemExit(f"benchmarks that failed: {', '.join(failed)}")


def _update(sections: list[str], names: list[str]) -> None:
    """Put each of ``sections`` in place of the section of docs/benchmarks.md with the same
    heading (or at the end), saying that it ran on its own, when and on what."""
    document = OUTPUT.read_text()
    facts = [line.split(": ", 1)[-1] for line in machine.describe().splitlines()[:3]]
    for section, name in zip(sections, names, strict=True):
        heading, _, body = section.partition("\n")
        note = (
            f"_Run on its own (`python -m tests.bench.run --only {name} --update`, "
            f"{', '.join(facts)}); every figure of this section comes from that run._"
        )
        marked = f"{heading}\n\n{note}\n{body}".rstrip() + "\n"
        start = document.find(heading + "\n")
        if start < 0:
            document = document.rstrip() + "\n\n" + marked
            continue
        end = document.find("\n## ", start + len(heading))
        rest = document[end + 1 :] if end >= 0 else ""
        document = document[:start] + marked + ("\n" + rest if rest else "")
    OUTPUT.write_text(document)


if __name__ == "__main__":
    main()
