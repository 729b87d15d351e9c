"""Turn a :class:`~transcriber.results.Transcription` into subtitle and text formats.

SRT and WebVTT are written for players; JSON, TXT and TSV for people and other programs.
Every format sees the segments in the same order, sorted by ``(start, channel)``: with
``CHANNELS=split`` the engine hands out each channel's segments in turn, and players reject
(or silently drop) cues whose times go backwards.

Segment text comes straight from the model and may hold anything, so each writer cleans it
for its own format rather than trusting it: a stray newline or ``-->`` would otherwise end
a cue early or start a bogus one.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

from transcriber.results import Segment, SpokenReading, Transcription, Word

ExportFormat = Literal["srt", "vtt", "json", "txt", "tsv"]
FORMATS: Final[tuple[ExportFormat, ...]] = get_args(ExportFormat)

# Two or more dashes before ">" would read as a cue timing arrow in SRT and WebVTT. The whole
# run is replaced, not just "-->", because replacing only the last three characters of
# "--->" would leave "-->" behind.
_ARROW = re.compile(r"-{2,}>")


@dataclass(frozen=True)
class _Cue:
    """One segment, ready to write: whole milliseconds, end clamped, text on one line."""

    start_ms: int
    end_ms: int
    channel: int
    text: str


def render(
    result: Transcription,
    fmt: ExportFormat,
    *,
    words: bool = False,
    mentions: Sequence[SpokenReading] | None = None,
) -> str:
    """Render ``result`` in format ``fmt``, one of :data:`FORMATS`.

    ``words`` adds word timings and ``mentions`` the readings said (see :func:`to_json_dict`);
    only JSON has a place for them, the other formats ignore them.
    Raises :class:`ValueError` for an unknown format, since ``fmt`` often comes from a
    command line or a request, where the type checker cannot vouch for it.
    """
    if fmt == "json":
        return to_json(result, words=words, mentions=mentions)
    renderer = _RENDERERS.get(fmt)
    if renderer is None:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return renderer(result)


def to_srt(result: Transcription) -> str:
    """SubRip: numbered cues from 1, ``HH:MM:SS,mmm`` times, a blank line between cues.

    With several channels each cue starts with ``[ch N] ``. An empty transcript gives an
    empty string, which SRT readers accept as a file with no cues.
    """
    multi = _is_multichannel(result)
    blocks = []
    for number, cue in enumerate(_cues(result), start=1):
        prefix = f"[ch {cue.channel}] " if multi else ""
        timing = f"{_timestamp(cue.start_ms, ',')} --> {_timestamp(cue.end_ms, ',')}"
        blocks.append(f"{number}\n{timing}\n{prefix}{cue.text}\n")
    return "\n".join(blocks)


def to_vtt(result: Transcription) -> str:
    """WebVTT: a ``WEBVTT`` header, then cues with ``HH:MM:SS.mmm`` times.

    With several channels each cue is a voice span ``<v ch N>``, which players can style or
    label per speaker, instead of SRT's plain-text prefix.
    """
    multi = _is_multichannel(result)
    blocks = ["WEBVTT\n"]
    for cue in _cues(result):
        # Escaped here, not in _cues, because only WebVTT gives "&" and "<" a meaning.
        text = html.escape(cue.text, quote=False)
        if multi:
            text = f"<v ch {cue.channel}>{text}"
        timing = f"{_timestamp(cue.start_ms, '.')} --> {_timestamp(cue.end_ms, '.')}"
        blocks.append(f"{timing}\n{text}\n")
    return "\n".join(blocks)


def to_json_dict(
    result: Transcription, *, words: bool, mentions: Sequence[SpokenReading] | None = None
) -> dict[str, Any]:
    """The transcript as plain data, ready for :func:`json.dumps`.

    Every segment is kept, empty ones included, in ``(start, channel)`` order; times are
    rounded to milliseconds, as the model's are no finer than that. Word timings are
    included only when ``words`` is true, because they make the output several times larger.
    ``mentions`` (a stored transcript's readings said, in the order said) become a
    ``mentions`` list; without them (a local file's transcript) there is no such key.
    """
    segments = []
    for segment in _sorted_segments(result.segments):
        start = _seconds(segment.start)
        item: dict[str, Any] = {
            "start": start,
            "end": max(start, _seconds(segment.end)),
            "text": segment.text.strip(),
            "channel": segment.channel,
        }
        if words:
            item["words"] = [_word_dict(word) for word in segment.words]
        segments.append(item)
    data: dict[str, Any] = {
        "text": result.text,
        "language": result.language,
        "language_probability": result.language_probability,
        "duration_s": _seconds(result.duration_s),
        "model": result.model,
        "segments": segments,
    }
    if mentions is not None:
        data["mentions"] = [_mention_dict(m) for m in mentions]
    return data


def to_json(
    result: Transcription, *, words: bool = False, mentions: Sequence[SpokenReading] | None = None
) -> str:
    """:func:`to_json_dict` as indented JSON, keeping non-ASCII text readable."""
    return json.dumps(
        to_json_dict(result, words=words, mentions=mentions), ensure_ascii=False, indent=2
    )


def to_txt(result: Transcription) -> str:
    """Plain text: one line per non-empty segment, ``[ch N] `` first with several channels."""
    multi = _is_multichannel(result)
    return "".join(
        f"[ch {cue.channel}] {cue.text}\n" if multi else f"{cue.text}\n" for cue in _cues(result)
    )


def to_tsv(result: Transcription) -> str:
    """Tab-separated ``start``, ``end``, ``channel``, ``text``, times in whole milliseconds.

    Integer milliseconds, as in Whisper's own TSV, so that spreadsheets and ``cut`` never
    meet a locale's decimal comma. The channel has its own column, so the text has no prefix.
    """
    rows = ["start\tend\tchannel\ttext\n"]
    # _cues already turned every tab and newline into a single space.
    rows.extend(
        f"{cue.start_ms}\t{cue.end_ms}\t{cue.channel}\t{cue.text}\n" for cue in _cues(result)
    )
    return "".join(rows)


_RENDERERS: Final[dict[str, Callable[[Transcription], str]]] = {
    "srt": to_srt,
    "vtt": to_vtt,
    "txt": to_txt,
    "tsv": to_tsv,
}


def _sorted_segments(segments: Sequence[Segment]) -> list[Segment]:
    # sorted() is stable, so segments that tie on (start, channel) keep the engine's order.
    return sorted(segments, key=lambda s: (s.start, s.channel))


def _cues(result: Transcription) -> list[_Cue]:
    """Non-empty segments in time order, text on one line and free of cue arrows."""
    cues = []
    for segment in _sorted_segments(result.segments):
        # split() with no argument also breaks on tabs, "\r", "\v", "\f" and Unicode line
        # separators, which some readers treat as line ends too.
        text = _ARROW.sub("->", " ".join(segment.text.split()))
        if not text:
            continue
        start_ms = _milliseconds(segment.start)
        cues.append(
            _Cue(
                start_ms=start_ms,
                end_ms=max(start_ms, _milliseconds(segment.end)),
                channel=segment.channel,
                text=text,
            )
        )
    return cues


def _is_multichannel(result: Transcription) -> bool:
    # Mixed-down audio is all channel 0; any other channel means CHANNELS=split was used.
    return any(segment.channel != 0 for segment in result.segments)


def _milliseconds(seconds: float) -> int:
    # Subtitle formats have no negative times; a tiny negative start from the model is 0.
    return max(0, round(seconds * 1000))


def _seconds(seconds: float) -> float:
    return _milliseconds(seconds) / 1000


def _timestamp(ms: int, decimal_mark: str) -> str:
    """``HH:MM:SS<mark>mmm``; hours grow past two digits rather than wrapping."""
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_mark}{millis:03d}"


def _word_dict(word: Word) -> dict[str, Any]:
    start = _seconds(word.start)
    return {
        "start": start,
        "end": max(start, _seconds(word.end)),
        "word": word.word,
        "probability": word.probability,
    }


def _mention_dict(m: SpokenReading) -> dict[str, Any]:
    """A reading said, with the names of the ``spoken_readings`` view's columns; times in the
    audio as the segments' (``start``, ``end``), wall-clock times as ISO 8601 in UTC."""
    start = _seconds(m.start)
    return {
        "start": start,
        "end": max(start, _seconds(m.end)),
        "said_at": m.said_at.isoformat(),
        "spoken_text": m.spoken_text,
        "spoken_value": m.spoken_value,
        "spoken_unit": m.spoken_unit,
        "sensor_code": m.sensor_code,
        "sensor_unit": m.sensor_unit,
        "value_in_sensor_unit": m.value_in_sensor_unit,
        "attribution": m.attribution,
        "sensor_text": m.sensor_text,
        "match_score": m.match_score,
        "probability": m.probability,
        "reading_ts": m.reading_ts.isoformat() if m.reading_ts is not None else None,
        "reading_value": m.reading_value,
        "difference": m.difference,
        "agrees": m.agrees,
    }
