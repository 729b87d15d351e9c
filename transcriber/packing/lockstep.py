"""Several windows transcribed side by side, their decoding batched: faster-whisper's own
sequential loop, run once per window in threads, meeting at each call to the decoder.

On a CPU the decoder costs as much as the encoder for short clips, and packing does not make
it cheaper: a window's words are as many tokens as the clips' words were alone. What makes
it cheaper is a batch: CTranslate2 decodes eight windows in one call in the time two and a
half take one by one (tiny.en, int8, beam 5, two cores: 2.7 s against 8.8 s, token for token
the same output; docs/benchmarks.md, packing). faster-whisper's batched pipeline batches
too, but it decodes each window once and keeps what comes out: no second pass over the part
of a window the model stopped short of, no fallback to higher temperatures. Packed windows
lost whole clips that way (WER 0.160 against 0.083). So each window runs through
``WhisperModel.transcribe`` itself (the service's subclass of it, which only ends the
last window at the speech: :mod:`transcriber.hallucinations`), in a thread of its own; the
threads share a stand-in for the CTranslate2 model (:class:`_Lockstep`) whose ``generate``
waits until every thread still running has called it, then makes one call for all of them.

Only the decoder is batched: a batch of encoder runs on the CPU is slower than the same runs
one by one (1.97 s against 1.40 s for eight windows), and CTranslate2 runs one call at a time
per model replica anyway, so the threads' encoder calls simply take turns. Calls are batched
only when CTranslate2 can take them together: the same options (a fallback at a higher
temperature decodes differently) and prompts of the same length (CTranslate2 wants the
start-of-transcript token at the same position in every prompt of a batch, and a pass given
previous text as its prompt has it further on; packed windows are run without, see
:func:`transcriber.packing.windows.run_windows`).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from transcriber.audio import Samples

Transcribed = tuple[list[Any], Any]  # faster-whisper's segments (consumed) and its info


class Cancelled(Exception):
    """The caller stopped waiting (a time limit): the windows' threads stop at their next
    call to the decoder."""


def transcribe_side_by_side(
    whisper: Any, windows: Sequence[Samples], kwargs: dict[str, Any]
) -> list[Transcribed | Exception]:
    """``whisper.transcribe(window, **kwargs)`` for each window, its segments consumed, the
    decoder calls of all windows batched. A window whose run raises gets its exception in
    its place; the others are not disturbed. An exception that reaches the caller while it
    waits (a time limit) stops every window at its next decoder call, and is raised again."""
    step = _Lockstep(whisper.model, parties=len(windows))
    results: list[Transcribed | Exception] = [Cancelled("not run")] * len(windows)
    failures: list[BaseException] = []

    def one(index: int, samples: Samples) -> None:
        mine = copy.copy(whisper)  # the same model and tokenizer; only the decoder differs
        mine.model = step
        try:
            segments, info = mine.transcribe(samples, **kwargs)
            results[index] = (list(segments), info)  # the generator is where decoding happens
        except Exception as exc:
            results[index] = exc
        except BaseException as exc:  # not for a window to swallow: the caller raises it
            failures.append(exc)
        finally:
            step.leave()

    threads = [
        threading.Thread(target=one, args=(i, samples), name=f"window-{i}", daemon=True)
        for i, samples in enumerate(windows)
    ]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except BaseException:
        step.cancel()
        raise
    if failures:
        raise failures[0]
    return results


@dataclass
class _Call:
    """One thread's call to ``generate``, waiting for the batch it goes out in."""

    features: np.ndarray
    prompts: list[list[int]]
    kwargs: dict[str, Any]
    result: list[Any] | None = None
    error: Exception | None = None
    done: bool = False

    @property
    def batchable_with(self) -> tuple[object, ...]:
        """Calls with equal keys can go out in one batch."""
        return (tuple(len(p) for p in self.prompts), repr(sorted(self.kwargs.items())))


class _Lockstep:
    """Stands in for a CTranslate2 ``Whisper`` model shared by ``parties`` threads: its
    ``generate`` batches the threads' calls; everything else is the model's own."""

    def __init__(self, model: Any, parties: int) -> None:
        self._model = model
        self._ready = threading.Condition()
        self._running = parties
        self._waiting: list[_Call] = []
        self._cancelled = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def generate(self, features: Any, prompts: list[list[int]], **kwargs: Any) -> list[Any]:
        # A copy: the encoder's output is batched with other threads' (on a GPU model the
        # encoder output lives on the device; this module is only used on the CPU).
        call = _Call(np.array(features), [list(p) for p in prompts], kwargs)
        with self._ready:
            if self._cancelled:
                raise Cancelled("the packed run was stopped")
            self._waiting.append(call)
            batch = self._take()
            while batch is None and not call.done:
                self._ready.wait()
        if batch is not None:
            self._run(batch)
        if call.error is not None:
            raise call.error
        assert call.result is not None
        return call.result

    def leave(self) -> None:
        """A thread is done: the others need no longer wait for it."""
        with self._ready:
            self._running -= 1
            batch = self._take()
        if batch is not None:
            self._run(batch)

    def cancel(self) -> None:
        with self._ready:
            self._cancelled = True
            for call in self._waiting:
                call.error, call.done = Cancelled("the packed run was stopped"), True
            self._waiting = []
            self._ready.notify_all()

    def _take(self) -> list[_Call] | None:
        """Every waiting call, once every running thread is waiting (under the lock)."""
        if self._waiting and len(self._waiting) >= self._running:
            batch, self._waiting = self._waiting, []
            return batch
        return None

    def _run(self, batch: list[_Call]) -> None:
        groups: dict[tuple[object, ...], list[_Call]] = {}
        for call in batch:
            groups.setdefault(call.batchable_with, []).append(call)
        for calls in groups.values():
            try:
                self._generate(calls)
            except Exception:
                # Whatever CTranslate2 refused in a batch, each call gets its own answer.
                for call in calls:
                    try:
                        self._generate([call])
                    except Exception as exc:
                        call.error = exc
        with self._ready:
            for call in batch:
                call.done = True
            self._ready.notify_all()

    def _generate(self, calls: list[_Call]) -> None:
        # A batch taken before the caller stopped waiting is not decoded after it: the thread
        # that took it may get the CPU again only seconds later (seen on a loaded machine).
        with self._ready:
            if self._cancelled:
                raise Cancelled("the packed run was stopped")
        import ctranslate2

        features = ctranslate2.StorageView.from_array(
            np.ascontiguousarray(np.concatenate([call.features for call in calls]))
        )
        prompts = [prompt for call in calls for prompt in call.prompts]
        results = self._model.generate(features, prompts, **calls[0].kwargs)
        start = 0
        for call in calls:
            call.result = results[start : start + len(call.prompts)]
            start += len(call.prompts)
