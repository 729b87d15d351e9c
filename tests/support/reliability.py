"""The reliability report: which test proves which promise, and what the last run measured.

A fault test is marked ``@pytest.mark.fault("P2", ...)`` with the promises it proves (the
numbers of docs/architecture.md's list, plus ``L`` for load) and records what it measured
with the ``figures`` fixture (``figures["transcripts"] = 500``). ``pytest -m fault
--reliability-report docs/reliability.md`` (``make reliability``) writes the document from
that run: every promise, its tests, their outcome, duration and figures.

A pytest plugin, registered by ``tests/conftest.py`` (``pytest_plugins``): it adds the
``--reliability-report`` option and the ``figures`` fixture.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.bench.machine import describe

PROMISES = {
    "P1": "One transcript per object version, however many events, scans, retries or redeliveries.",
    "P2": "`kill -9` of a worker mid-job: the job runs again and ends with exactly one transcript.",
    "P3": "Broker or database outage: jobs wait and complete afterwards; the scan re-finds "
    "what events missed; a queue the broker lost is published again within a sweep interval, "
    "a long one never.",
    "P4": "A poison file fails after `MAX_ATTEMPTS` with `error_category`, and never blocks "
    "other jobs.",
    "P5": "Bad input gets a clear error and nothing else breaks: empty, not audio, truncated, "
    "too long, too big, odd sample rates and channel counts, keys with spaces/unicode/`..`, "
    "hostile metadata strings.",
    "P6": "Celery accepts JSON only; the worker never builds a local path from an S3 key; SQL "
    "uses bound parameters; a read-only role cannot write; no credentials in logs.",
    "L": "Under load (500 files, 2 worker processes) every file gets one transcript and the "
    "worker processes' memory stays bounded.",
}

FIGURES = pytest.StashKey[dict[str, Any]]()


@dataclass
class _Row:
    nodeid: str
    doc: str
    promises: tuple[str, ...]
    outcome: str = "not run"
    duration_s: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)


_rows: dict[str, _Row] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reliability-report",
        metavar="PATH",
        default=None,
        help="write the reliability report (Markdown) of the fault tests of this run to PATH",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        marker = item.get_closest_marker("fault")
        if marker is None:
            continue
        unknown = set(marker.args) - set(PROMISES)
        if unknown or not marker.args:
            raise pytest.UsageError(f"{item.nodeid}: fault marker needs promises of {PROMISES}")
        doc = getattr(getattr(item, "function", None), "__doc__", None) or ""
        _rows[item.nodeid] = _Row(item.nodeid, " ".join(doc.split()), tuple(marker.args))


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Measurements of this test for the reliability report (name -> value)."""
    found: dict[str, Any] = {}
    request.node.stash[FIGURES] = found
    return found


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    row = _rows.get(item.nodeid)
    if row is not None:
        row.duration_s += report.duration
        if report.failed:
            row.outcome = "failed" if report.when == "call" else f"error in {report.when}"
        elif report.skipped:
            row.outcome = "skipped"
        elif report.when == "call":
            row.outcome = "passed"
        row.figures = item.stash.get(FIGURES, row.figures)
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("--reliability-report")
    if path and _rows:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(render(list(_rows.values())))


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render(rows: list[_Row]) -> str:
    by_promise: dict[str, list[_Row]] = defaultdict(list)
    for row in rows:
        for promise in row.promises:
            by_promise[promise].append(row)
    lines = [
        "# Reliability",
        "",
        "Each promise of the service (docs/architecture.md), the tests that would fail if it",
        "broke, and what the last run of them measured. Written by `make reliability`",
        "(`pytest -m fault --reliability-report docs/reliability.md`), or copied from",
        "`var/reliability.md`, which every `make test` (and so CI) writes; do not edit by hand.",
        "",
        "## Machine",
        "",
        describe(),
        "",
    ]
    passed = sum(1 for row in rows if row.outcome == "passed")
    lines += [f"{passed} of {len(rows)} fault tests passed.", ""]
    for promise, text in PROMISES.items():
        lines += [f"## {promise}. {text}", ""]
        tests = by_promise.get(promise, [])
        if not tests:
            lines += ["No test in this run.", ""]
            continue
        lines += [
            "| Test | What it does | Result | Time | Measured |",
            "| --- | --- | --- | --- | --- |",
        ]
        for row in tests:
            name = re.sub(r"^tests/", "", row.nodeid)
            measured = "; ".join(f"{k}: {_format(v)}" for k, v in row.figures.items()) or "—"
            lines.append(
                f"| `{name}` | {row.doc or '—'} | {row.outcome} | {row.duration_s:.0f} s "
                f"| {measured} |"
            )
        lines.append("")
    return "\n".join(lines)
