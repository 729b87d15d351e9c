"""A Celery app for fault tests: the real one (``workers.app``), with a decoder that kills
its own process, as a decoder crash would, on any file that starts with :data:`POISON`.

Start a worker with ``celery -A tests.support.poison_worker worker`` (the repository root on
``PYTHONPATH``). The prefork pool forks after this module is imported, so every child
decodes through the patched function.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import transcriber.audio
import transcriber.job_steps
from transcriber.audio import DecodedAudio
from workers import app

POISON = b"POISON-AUDIO-KILLS-ITS-DECODER\n"

_decode = transcriber.audio.decode


def _deadly_decode(
    path: Path, *, max_bytes: int, max_seconds: float, split_channels: bool = False
) -> DecodedAudio:
    with path.open("rb") as file:
        if file.read(len(POISON)) == POISON:
            os.kill(os.getpid(), signal.SIGKILL)
    return _decode(
        path, max_bytes=max_bytes, max_seconds=max_seconds, split_channels=split_channels
    )


# The module that fetches a job's audio imported the name; replace it there.
transcriber.job_steps.decode = _deadly_decode  # type: ignore[attr-defined]

__all__ = ["POISON", "app"]
