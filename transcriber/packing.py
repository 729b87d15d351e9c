"""Short clips packed into shared windows, and the model's output split back per clip.

Whisper's encoder always works on 30 s windows: a 4 s clip costs as much encoder work as 30 s
of audio. Several short clips laid end to end, with a stretch of silence between them, go
through the model as one window, and every word comes back with its time in that window;
each word then goes back to the clip it was said in, and its time becomes a time in that
clip. This module is the arithmetic of that, with no database or model:

- :func:`plan` lays clips out into windows of at most ``max_seconds``;
- :func:`join` builds a window's samples;
- :func:`split` gives each clip its own segments, in its own time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from transcriber.audio import SAMPLE_RATE, Samples
from transcriber.results import Segment, Word

# Silence between two clips of a window. Whisper's word times are good to a few hundred
# milliseconds at best; a word is given to the clip whose stretch (widened by half a gap on
# each side) holds its middle, so a word would have to be placed half a gap, 0.5 s, off its
# real time to land in a neighbour. The cost is one second of each 30 s window.
GAP_SECONDS = 1.0


@dataclass(frozen=True)
class Placed:
    """Clip ``index`` (of the list given to :func:`plan`) at ``offset_s`` in its window."""

    index: int
    offset_s: float
    duration_s: float

    @property
    def end_s(self) -> float:
        return self.offset_s + self.duration_s


@dataclass(frozen=True)
class Window:
    """Clips laid end to end with :data:`GAP_SECONDS` of silence between them."""

    clips: tuple[Placed, ...]

    @property
    def duration_s(self) -> float:
        return self.clips[-1].end_s if self.clips else 0.0


def fits(duration_s: float, max_seconds: float) -> bool:
    """Whether a clip this long can share a window at all (it fits with a gap and one more
    second of audio beside it)."""
    return 0 < duration_s <= max_seconds - GAP_SECONDS - 1.0


def plan(durations: Sequence[float], max_seconds: float) -> list[Window]:
    """Windows of at most ``max_seconds`` holding every clip, by first fit in the given order:
    each clip goes into the first window with room left, or starts a new one. A clip too long
    to share (see :func:`fits`) gets a window of its own."""
    windows: list[list[Placed]] = []
    for index, duration in enumerate(durations):
        for clips in windows:
            offset = clips[-1].end_s + GAP_SECONDS
            if fits(duration, max_seconds) and offset + duration <= max_seconds:
                clips.append(Placed(index, offset, duration))
                break
        else:
            windows.append([Placed(index, 0.0, duration)])
    return [Window(tuple(clips)) for clips in windows]


def join(window: Window, samples: Sequence[Samples]) -> Samples:
    """The window's audio: each clip's samples at its offset, silence between them."""
    total = round(window.duration_s * SAMPLE_RATE)
    out = np.zeros(total, dtype=np.float32)
    for clip in window.clips:
        audio = samples[clip.index]
        start = round(clip.offset_s * SAMPLE_RATE)
        length = min(len(audio), total - start)
        out[start : start + length] = audio[:length]
    return out


def split(window: Window, segments: Sequence[Segment]) -> dict[int, list[Segment]]:
    """Each clip's segments (keyed by the clip's index), with times from the clip's own start
    and inside its duration.

    A segment that the model ran across two clips is cut in two at the words: each word
    goes to the clip that holds its middle. A segment without words (word timestamps off)
    goes whole to the clip that holds its middle.
    """
    out: dict[int, list[Segment]] = {clip.index: [] for clip in window.clips}
    for segment in segments:
        if not segment.words:
            clip = _owner(window, (segment.start + segment.end) / 2)
            out[clip.index].append(_local(segment, clip, segment.text, ()))
            continue
        for clip, words in _by_clip(window, segment.words):
            text = "".join(w.word for w in words).strip()
            if any(ch.isalnum() for ch in text):
                out[clip.index].append(_local(segment, clip, text, words))
    return out


def _owner(window: Window, time_s: float) -> Placed:
    """The clip whose stretch, widened by half a gap on each side, holds ``time_s``."""
    owner = window.clips[0]
    for clip in window.clips[1:]:
        if time_s >= clip.offset_s - GAP_SECONDS / 2:
            owner = clip
    return owner


def _by_clip(window: Window, words: Sequence[Word]) -> list[tuple[Placed, list[Word]]]:
    """The words in runs that belong to one clip each, in order."""
    runs: list[tuple[Placed, list[Word]]] = []
    for word in words:
        clip = _owner(window, (word.start + word.end) / 2)
        if runs and runs[-1][0] is clip:
            runs[-1][1].append(word)
        else:
            runs.append((clip, [word]))
    return runs


def _local(segment: Segment, clip: Placed, text: str, words: Sequence[Word]) -> Segment:
    def at(time_s: float) -> float:
        # To the millisecond: Whisper's own times step by 20 ms, and the subtraction would
        # otherwise leave 0.20000000000000018 where the model said 0.2.
        return min(round(max(float(time_s) - clip.offset_s, 0.0), 3), clip.duration_s)

    local_words = tuple(
        replace(w, start=at(w.start), end=max(at(w.end), at(w.start))) for w in words
    )
    start = local_words[0].start if local_words else at(segment.start)
    end = local_words[-1].end if local_words else at(segment.end)
    return replace(segment, start=start, end=max(end, start), text=text, words=local_words)
