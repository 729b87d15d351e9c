"""Real (human) speech for tests and benchmarks, read from folders outside the repository.

The project's shared data lies beside the checkout (``../shared/data/real-speech/``: JFK's
"ask not" sentence, public domain, with its reference text in ``refs.json``); it is never
copied into the repository. More folders of the same shape (audio files and a ``refs.json``
mapping each file name to its reference text) can be given to the benchmarks with
``BENCH_REAL_SPEECH`` (``make bench REAL_SPEECH=DIR``): public test recordings of other
open-source speech projects, read from where they lie and not committed.

A pytest plugin, registered by ``tests/conftest.py``: the ``jfk_recording`` fixture.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tests.support import REQUIRE_SERVICES

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data" / "real-speech"
JFK = SHARED / "jfk.flac"
JFK_TEXT = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)
# Where JFK pauses (seconds; the quiet stretches of the recording's loudness): after
# "Americans" (2.15-3.25 s) and after "can do for you" (7.55-8.15 s). Cut there, the file
# gives three real utterances, the first and last of which share no word.
JFK_UTTERANCES = (
    (0.0, 2.7, "And so my fellow Americans,"),
    (2.7, 7.85, "ask not what your country can do for you,"),
    (7.85, 11.0, "ask what you can do for your country."),
)


@dataclass(frozen=True)
class Recording:
    path: Path
    text: str


def folders() -> list[Path]:
    """The shared folder (where it exists) and those named by ``BENCH_REAL_SPEECH``."""
    extra = [Path(p) for p in os.environ.get("BENCH_REAL_SPEECH", "").split(os.pathsep) if p]
    return [folder for folder in [SHARED, *extra] if (folder / "refs.json").is_file()]


def recordings(folder: Path) -> list[Recording]:
    """The recordings of ``folder`` that its ``refs.json`` names, in name order."""
    refs: dict[str, str] = json.loads((folder / "refs.json").read_text(encoding="utf-8"))
    return [
        Recording(folder / name, text)
        for name, text in sorted(refs.items())
        if (folder / name).is_file()
    ]


def jfk_utterances(
    samples: npt.NDArray[np.float32], rate: int
) -> list[tuple[npt.NDArray[np.float32], str]]:
    """JFK's sentence (decoded mono ``samples`` at ``rate``) as three utterances, with texts."""
    return [
        (np.ascontiguousarray(samples[round(start * rate) : round(end * rate)]), text)
        for start, end, text in JFK_UTTERANCES
    ]


@pytest.fixture(scope="session")
def jfk_recording() -> Path:
    """JFK's "ask not" sentence from the shared real-speech folder beside the checkout
    (:data:`JFK`); skip without it, or fail in CI."""
    if not JFK.is_file():
        problem = f"the shared real-speech recording {JFK} is not there"
        if REQUIRE_SERVICES:
            pytest.fail(problem + " (TEST_REQUIRE_SERVICES=1)")
        pytest.skip(problem)
    return JFK
