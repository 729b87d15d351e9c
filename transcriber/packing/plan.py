"""Short clips packed into shared windows, and the model's output split back per clip.

Whisper's encoder always works on 30 s windows: a 4 s clip costs as much encoder work as 30 s
of audio. Several short clips laid end to end, with a stretch of silence between them, go
through the model as one window, and every word comes back with its time in that window;
each word then goes back to the clip it was said in, and its time becomes a time in that
clip. This module is the arithmetic of that, with no database or model:

- :class:`Speech` is what of a clip goes into a window: with the VAD on, only its speech
  (as faster-whisper would cut it were the clip alone), and the way back to the clip's times;
- :func:`plan` lays clips out into windows of at most ``max_seconds``;
- :func:`join` builds a window's samples;
- :func:`split` gives each clip its own segments, in its own time.

Which clip a segment belongs to is read first from the decoder's own timestamps (the
segment's ``start`` and ``end`` as the model ran the window): they fall on the gaps between
clips, to the 20 ms. A segment that the decoder ran across a gap (it does when it is given a
prompt, hotwords for one, which then comes back as one segment for the whole window) is cut
at its words, each to the clip, of those it covers, that holds the word's middle. The words'
times come from a dynamic time warping of the decoder's attention over the audio, good to a
few hundred milliseconds on distinct speech; but it can slip by a whole clip when
neighbouring clips sound alike, and the decoder itself can skip one of several clips that say
the same thing (five copies of one note came back as four, and six as eight, each segment in
a clip of its own or one for the whole window depending on the CPU's arithmetic). So a clip is
run again alone (:attr:`Split.rerun`) when it got far fewer or far more words than its speech
could hold (:data:`WORDS_PER_SECOND`; none at all, when the decoder skipped it), when the
alignment lost its way in it (:data:`LOST_WORDS`), or when its words leave the start or the
end of its speech unsaid (:data:`EDGE_SECONDS`).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from transcriber import hallucinations
from transcriber.audio import SAMPLE_RATE, Samples
from transcriber.results import Segment, Word

# Silence between two clips of a window: a pause long enough for the decoder to end a
# segment in, and for a segment's times to say which clip it is in; where a segment runs
# across it, a word goes to the clip whose stretch, widened by half a gap on each side, holds
# its middle. The cost is one second of each 30 s window.
GAP_SECONDS = 1.0
# A segment's decoder times cover a clip when they overlap this much of it (or half of a
# shorter clip): a decoder segment ends in the gap after its clip, sometimes a few frames
# into the next one, never seconds into it.
COVER_SECONDS = 0.5
# A segment whose decoder times reach this far into a clip's stretch may hold that clip's
# first words: the decoder ran "... tastes wonderful, bright" as one segment ending 0.25 s
# into the next clip, "Bright morning sunshine", and "bright" went to the clip before. Such
# a segment is cut at its words among every clip it reaches.
REACH_SECONDS = 0.04
# Words a second of speech holds, at least and at most, in any clip of a window: slow
# dictation with pauses to fast talk, with room to spare (the notes of the packing benchmark
# hold 2.3 to 3.8 words a second of the VAD's speech).
WORDS_PER_SECOND = (0.5, 6.0)
# A word that the alignment gave less than one 20 ms frame has no place of its own in the
# audio. One happens in good transcripts; where a segment cut at its words puts this many in
# one clip, the alignment has lost its way there (tiny.en with hotwords, 96 notes: the four
# such clips had a WER of 1.49, the 92 others 0.09), and when the first of them is at the
# very start of the clip they may be the end of the clip before (six identical clips: words
# of the third came back at the start of the fourth), which is then in doubt too.
LOST_WORDS = 2
_FRAME_SECONDS = 0.02
# The VAD keeps 0.4 s before and after each stretch of speech, so a clip's first word starts
# about that far into what it put into the window, and its last word ends about that far
# before the end. A first word that starts later than this, or a last word that ends earlier,
# means words at that edge are missing: the decoder skipped them or gave them to the clip
# beside it (a LibriSpeech sentence packed after a note lost its first words, "and mister",
# to the note, and came back 1.08 s late). The clip then runs again alone.
EDGE_SECONDS = 1.0


@dataclass(frozen=True)
class Speech:
    """What of a clip goes into a window: ``samples``, the stretches ``kept`` of the clip (in
    samples, in order) laid end to end; the clip's own length; and whether the VAD cut them
    (they then start and end with its padding, not with silence of any length)."""

    samples: Samples
    kept: tuple[tuple[int, int], ...]
    clip_s: float
    vad: bool = True

    @classmethod
    def whole(cls, samples: Samples) -> Speech:
        """All of ``samples``, as they are (the VAD off)."""
        kept = ((0, len(samples)),) if len(samples) else ()
        return cls(samples, kept, len(samples) / SAMPLE_RATE, vad=False)

    @classmethod
    def cut(cls, samples: Samples, kept: Sequence[tuple[int, int]]) -> Speech:
        """The stretches ``kept`` of ``samples`` (the VAD's), end to end."""
        joined = (
            np.concatenate([samples[start:end] for start, end in kept])
            if kept
            else np.zeros(0, dtype=np.float32)
        )
        return cls(joined, tuple(kept), len(samples) / SAMPLE_RATE)

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    def clip_time(self, time_s: float, middle_s: float | None = None) -> float:
        """``time_s`` (seconds into :attr:`samples`) as seconds into the clip. The stretch is
        the one that holds ``middle_s`` (default ``time_s``), so that a word's start and end
        are moved by the same amount, as faster-whisper does."""
        if not self.kept:
            return 0.0
        ends = np.cumsum([end - start for start, end in self.kept])
        at = round((time_s if middle_s is None else middle_s) * SAMPLE_RATE)
        stretch = min(bisect.bisect(ends.tolist(), at), len(self.kept) - 1)
        before = int(ends[stretch - 1]) if stretch else 0
        return float(time_s) + (self.kept[stretch][0] - before) / SAMPLE_RATE


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


@dataclass(frozen=True)
class Split:
    """A window's segments given back to its clips (keyed by the clip's index)."""

    segments: dict[int, list[Segment]]
    rerun: frozenset[int]  # clips whose words cannot be trusted: to be run again alone


def split(window: Window, segments: Sequence[Segment], speech: Sequence[Speech]) -> Split:
    """Each clip's segments, with times from the clip's own start and inside its duration.
    ``segments`` carry the decoder's times as ``start`` and ``end``; ``speech`` is what each
    clip (by index) put into the window.

    A segment whose decoder times cover one clip, and reach into no other, is that clip's,
    words and all; one that reaches none (said in a gap) is the nearest clip's, by its
    middle, unless its words show that nothing was said there
    (:func:`transcriber.hallucinations.doubtful`): the gap is silence laid in by
    :func:`join`. One that reaches into several is cut at its words (see the module); a
    segment without words (word timestamps off) can not be cut, and its clips are run
    again. Then every clip's words are counted against its speech.
    """
    out: dict[int, list[Segment]] = {clip.index: [] for clip in window.clips}
    rerun: set[int] = set()
    for segment in segments:
        covered = _covered(window, segment.start, segment.end, COVER_SECONDS)
        reached = _covered(window, segment.start, segment.end, REACH_SECONDS)
        if not reached and hallucinations.doubtful(segment):
            continue  # said over the silence laid between two clips: nothing was said there
        if len(reached) <= 1:
            (clip,) = covered or (_owner(window.clips, (segment.start + segment.end) / 2),)
            out[clip.index].append(_local(segment, clip, speech[clip.index], segment.words))
            continue
        if not segment.words:
            rerun.update(clip.index for clip in reached)
        runs = _by_clip(reached, segment.words)
        rerun.update(_lost(reached, runs))
        for clip, words in runs:
            local = _local(segment, clip, speech[clip.index], words)
            if any(ch.isalnum() for ch in local.text):
                out[clip.index].append(local)
    low, high = WORDS_PER_SECOND
    for index, given in out.items():
        said = sum(len(segment.words) or len(segment.text.split()) for segment in given)
        rate = said / max(speech[index].duration_s, 1.0)
        if not low <= rate <= high or edge_missing(given, speech[index]):
            rerun.add(index)
    return Split(out, frozenset(rerun))


def edge_missing(segments: Sequence[Segment], speech: Speech) -> bool:
    """Whether the words of ``segments`` (a clip's, in its own time) leave the start or the
    end of its speech unsaid (see :data:`EDGE_SECONDS`; only where the VAD cut the speech:
    without it, a clip may start or end with any length of silence)."""
    words = [word for segment in segments for word in segment.words]
    if not words or not speech.kept or not speech.vad:
        return False
    first_s, last_s = speech.kept[0][0] / SAMPLE_RATE, speech.kept[-1][1] / SAMPLE_RATE
    return words[0].start - first_s > EDGE_SECONDS or last_s - words[-1].end > EDGE_SECONDS


def _lost(clips: Sequence[Placed], runs: Sequence[tuple[Placed, list[Word]]]) -> set[int]:
    """The clips in which the alignment of a cut segment lost its way (see
    :data:`LOST_WORDS`); ``runs`` are its words by clip, ``clips`` those it reaches."""
    doubt: set[int] = set()
    for clip, words in runs:
        lost = [w for w in words if w.end - w.start < _FRAME_SECONDS]
        if len(lost) < LOST_WORDS:
            continue
        doubt.add(clip.index)
        at = clips.index(clip)
        if at > 0 and lost[0].start < clip.offset_s + COVER_SECONDS:
            doubt.add(clips[at - 1].index)
    return doubt


def _covered(window: Window, start_s: float, end_s: float, least_s: float) -> tuple[Placed, ...]:
    """The clips of which the stretch from ``start_s`` to ``end_s`` overlaps at least
    ``least_s`` (or half of a shorter clip): :data:`COVER_SECONDS`, :data:`REACH_SECONDS`."""
    return tuple(
        clip
        for clip in window.clips
        if min(end_s, clip.end_s) - max(start_s, clip.offset_s) >= min(least_s, clip.duration_s / 2)
    )


def _owner(clips: Sequence[Placed], time_s: float) -> Placed:
    """Of ``clips`` (in window order), the one whose stretch, widened by half a gap on each
    side, holds ``time_s``; the nearest where none does."""
    owner = clips[0]
    for clip in clips[1:]:
        if time_s >= clip.offset_s - GAP_SECONDS / 2:
            owner = clip
    return owner


def _by_clip(clips: Sequence[Placed], words: Sequence[Word]) -> list[tuple[Placed, list[Word]]]:
    """The words in runs that belong to one of ``clips`` each, in order."""
    runs: list[tuple[Placed, list[Word]]] = []
    for word in words:
        clip = _owner(clips, (word.start + word.end) / 2)
        if runs and runs[-1][0] is clip:
            runs[-1][1].append(word)
        else:
            runs.append((clip, [word]))
    return runs


def _local(segment: Segment, clip: Placed, speech: Speech, words: Sequence[Word]) -> Segment:
    """``segment`` as a segment of ``clip``, with these of its ``words`` (its text theirs when
    they are not all of its words)."""

    def at(time_s: float, middle_s: float | None = None) -> float:
        # Back to the clip's own time, inside it. To the millisecond: Whisper's own times
        # step by 20 ms, and the arithmetic would otherwise leave 0.20000000000000018 where
        # the model said 0.2.
        into = min(max(float(time_s) - clip.offset_s, 0.0), clip.duration_s)
        middle = None if middle_s is None else float(middle_s) - clip.offset_s
        return min(round(max(speech.clip_time(into, middle), 0.0), 3), speech.clip_s)

    local = []
    for w in words:
        middle = (w.start + w.end) / 2
        start = at(w.start, middle)
        local.append(replace(w, start=start, end=max(at(w.end, middle), start)))
    text = segment.text if len(words) == len(segment.words) else "".join(w.word for w in words)
    start = local[0].start if local else at(segment.start)
    end = local[-1].end if local else at(segment.end)
    return replace(segment, start=start, end=max(end, start), text=text.strip(), words=tuple(local))
