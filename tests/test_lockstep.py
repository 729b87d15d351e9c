"""Packed windows side by side, their decoding batched (transcriber.packing.lockstep), with the real
bundled model: the same segments as each window run alone, fewer decoder calls, one broken
window not disturbing the others, and a caller's time limit stopping every window."""

from __future__ import annotations

import copy
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import pytest
import soundfile

from transcriber.audio import Samples
from transcriber.config import Settings
from transcriber.job_options import TranscribeOptions
from transcriber.packing import plan as packing
from transcriber.packing.lockstep import transcribe_side_by_side
from transcriber.packing.windows import run_windows
from transcriber.speech_model import LoadedModel, ModelConfig, get_model

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    return get_model(ModelConfig.from_settings(Settings()))


@pytest.fixture(scope="module")
def windows() -> list[Samples]:
    """Three windows of two notes each (tests/data/make_packing.sh)."""
    notes = [soundfile.read(DATA / f"packing_{n}.flac", dtype="float32")[0] for n in range(1, 7)]
    planned = packing.plan([len(n) / 16_000 for n in notes], 6.0)
    assert [len(w.clips) for w in planned] == [2, 2, 2]
    return [packing.join(window, notes) for window in planned]


class _Spy:
    """The CTranslate2 model, with the number of prompts of each ``generate`` call noted."""

    def __init__(self, model: Any, fail_with: BaseException | None = None) -> None:
        self._model = model
        self._fail_with = fail_with
        self.batch_sizes: list[int] = []
        self.called_at: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def generate(self, features: Any, prompts: list[list[int]], **kwargs: Any) -> Any:
        self.batch_sizes.append(len(prompts))
        self.called_at.append(time.monotonic())
        if self._fail_with is not None:
            raise self._fail_with
        return self._model.generate(features, prompts, **kwargs)


def _spied(loaded: LoadedModel, fail_with: BaseException | None = None) -> tuple[Any, _Spy]:
    whisper = copy.copy(loaded.whisper)
    whisper.model = _Spy(loaded.whisper.model, fail_with)
    return whisper, whisper.model


def _packed_kwargs() -> dict[str, Any]:
    return {"beam_size": 5, "vad_filter": True, "word_timestamps": True}


def test_side_by_side_gives_each_window_what_it_gets_alone(
    loaded: LoadedModel, windows: list[Samples]
) -> None:
    options = replace(TranscribeOptions.from_settings(Settings()), word_timestamps=True)
    together = run_windows(loaded, windows, options)
    for samples, result in zip(windows, together, strict=True):
        assert not isinstance(result, Exception)
        (alone,) = run_windows(loaded, [samples], options)  # one window: no threads
        assert not isinstance(alone, Exception)
        assert result[0] == alone[0]
        assert alone[0]
        assert all(s.words for s in alone[0])


def test_on_a_gpu_the_windows_run_one_after_another_with_the_same_result(
    loaded: LoadedModel, windows: list[Samples]
) -> None:
    # The GPU path needs no GPU to be checked: only the device's name picks it.
    options = replace(TranscribeOptions.from_settings(Settings()), word_timestamps=True)
    on_gpu = replace(loaded, device="cuda")
    assert run_windows(on_gpu, windows, options) == run_windows(loaded, windows, options)


def test_the_windows_first_decoder_calls_go_out_as_one_batch(
    loaded: LoadedModel, windows: list[Samples]
) -> None:
    whisper, spy = _spied(loaded)
    results = transcribe_side_by_side(whisper, windows, _packed_kwargs())
    assert all(not isinstance(r, Exception) for r in results)
    # Every window's first pass in one call; a second pass over what one window's first
    # stopped short of, or a fallback, may follow on its own.
    assert spy.batch_sizes[0] == len(windows)
    assert sum(spy.batch_sizes) >= len(windows)
    assert len(spy.batch_sizes) < sum(spy.batch_sizes)


def test_a_window_that_breaks_leaves_the_others_alone(
    loaded: LoadedModel, windows: list[Samples]
) -> None:
    broken = np.stack([windows[1], windows[1]])  # two-dimensional: faster-whisper refuses it
    results = transcribe_side_by_side(
        loaded.whisper, [windows[0], broken, windows[2]], _packed_kwargs()
    )
    assert isinstance(results[1], Exception)
    for result in (results[0], results[2]):
        assert not isinstance(result, Exception)
        assert " ".join(s.text for s in result[0]).strip()


def test_a_decoder_error_reaches_every_window_it_hits(
    loaded: LoadedModel, windows: list[Samples]
) -> None:
    whisper, spy = _spied(loaded, fail_with=RuntimeError("out of memory"))
    results = transcribe_side_by_side(whisper, windows, _packed_kwargs())
    assert [str(r) for r in results] == ["out of memory"] * len(windows)
    # The batch failed, then each call alone: nothing is left waiting.
    assert spy.batch_sizes == [3, 1, 1, 1]


class _TimeLimit(BaseException):
    """What Celery's soft time limit raises in the worker's main thread."""


def _window_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("window-")]


@pytest.fixture
def alarm() -> Iterator[list[float]]:
    """SIGALRM raises :class:`_TimeLimit` (as SIGUSR1 does in a Celery worker); yields the
    list the time it struck is put in."""
    struck: list[float] = []

    def strike(signum: int, frame: FrameType | None) -> None:
        struck.append(time.monotonic())
        raise _TimeLimit

    previous = signal.signal(signal.SIGALRM, strike)
    yield struck
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def test_a_time_limit_stops_every_window(
    loaded: LoadedModel, windows: list[Samples], alarm: list[float]
) -> None:
    whisper, spy = _spied(loaded)
    # Twelve windows: their encoder runs alone take longer than the limit.
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    with pytest.raises(_TimeLimit):
        transcribe_side_by_side(whisper, windows * 4, _packed_kwargs())
    deadline = time.monotonic() + 30
    while _window_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _window_threads()
    # No thread went on to the decoder behind the caller's back.
    (struck,) = alarm
    assert [t for t in spy.called_at if t > struck] == []
