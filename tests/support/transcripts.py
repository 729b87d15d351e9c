"""Transcripts as the tests write them: segments with word timings, as Whisper gives them."""

from __future__ import annotations

from transcriber.results import Segment, Word


def whisper_segment(text: str, start: float) -> Segment:
    """``text`` as Whisper gives it: words 0.5 s apart (exact in binary, so exact in SQL),
    each with a leading space but the first, probabilities falling from 0.9 by 0.01."""
    words = tuple(
        Word(start + 0.5 * n, start + 0.5 * n + 0.4, (" " if n else "") + piece, 0.9 - 0.01 * n)
        for n, piece in enumerate(text.split())
    )
    return Segment(start, start + 0.5 * len(words), text, words=words)
