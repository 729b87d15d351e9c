"""Fixtures for every test; the shared ones live in tests/support/ and are registered here as
pytest plugins, so that a test asks for any of them by name and imports nothing for it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from transcriber.config import get_settings

# Helper modules (not plugins) whose asserts should explain themselves as a test's do.
pytest.register_assert_rewrite("tests.support.ingest")

pytest_plugins = [
    "tests.support.databases",
    "tests.support.moto",
    "tests.support.service",
    "tests.support.speech",
    "tests.support.reliability",
]


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Settings come from the environment the test sets, not from the developer's, and
    relative paths (``./var``, ``.env``) resolve in a directory of the test's own."""
    for name in list(os.environ):
        if name.startswith("TRANSCRIBER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
