"""Our own result types between faster-whisper and everything downstream (SQL, exports).

faster-whisper yields its segments lazily from a generator; :mod:`transcriber.speech_model` consumes
that generator in one place and hands out these frozen dataclasses, so nothing else depends
on faster-whisper's types or on when its generator runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Word:
    """One word; times in seconds from the start of the audio."""

    start: float
    end: float
    word: str
    probability: float | None = None


@dataclass(frozen=True)
class Segment:
    """A stretch of speech; times in seconds from the start of the audio.

    ``channel`` is 0 for mixed-down audio, or the channel index with ``CHANNELS=split``.
    """

    start: float
    end: float
    text: str
    channel: int = 0
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    compression_ratio: float | None = None
    words: tuple[Word, ...] = ()


@dataclass(frozen=True)
class Transcription:
    """Everything one audio file turned into."""

    language: str | None
    language_probability: float | None
    duration_s: float
    segments: tuple[Segment, ...]
    model: str
    processing_s: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    device: str | None = None
    compute_type: str | None = None

    @property
    def text(self) -> str:
        """The whole transcript: segment texts joined in time order."""
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())


@dataclass(frozen=True)
class SpokenReading:
    """A sensor reading said in a stored transcript, next to the sensor's own reading nearest
    to when it was said: a row of the ``spoken_readings`` view, as exports list it."""

    start: float
    end: float
    """Seconds from the start of the audio (the number and its unit)."""
    said_at: datetime
    spoken_text: str
    spoken_value: float
    spoken_unit: str | None
    sensor_code: str | None
    """None when unattributed, or when its sensor was deleted since."""
    sensor_unit: str | None
    value_in_sensor_unit: float | None
    attribution: str | None
    sensor_text: str | None
    match_score: float | None
    probability: float | None
    reading_ts: datetime | None
    reading_value: float | None
    difference: float | None
    agrees: bool | None
