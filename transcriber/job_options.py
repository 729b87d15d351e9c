"""The options a job runs with: the configured decoding options, and the vocabulary of the
facility its audio was placed at (as hotwords). Recorded with each job's transcript."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from transcriber.config import Settings
from transcriber.schema import AudioObject, Facility, Sensor


@dataclass(frozen=True)
class TranscribeOptions:
    """Decoding options; recorded with each job (``transcription_jobs.options``)."""

    language: str | None = None
    beam_size: int = 5
    vad_filter: bool = True
    word_timestamps: bool = True
    initial_prompt: str | None = None
    hotwords: str | None = None
    channels: Literal["mix", "split"] = "mix"

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> TranscribeOptions:
        options = cls(
            language=settings.language or None,
            beam_size=settings.beam_size,
            vad_filter=settings.vad_filter,
            word_timestamps=settings.word_timestamps,
            initial_prompt=settings.initial_prompt or None,
            hotwords=settings.hotwords or None,
            channels=settings.channels,
        )
        return replace(options, **overrides) if overrides else options

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def model_kwargs(self) -> dict[str, Any]:
        """faster-whisper's ``transcribe`` arguments for these options (a packed window adds
        its own: :func:`transcriber.packing.windows.run_windows`)."""
        return {
            "language": self.language,
            "beam_size": self.beam_size,
            "vad_filter": self.vad_filter,
            "word_timestamps": self.word_timestamps,
            "initial_prompt": self.initial_prompt,
            "hotwords": self.hotwords,
        }


# Whisper keeps at most half its 448-token context for hotwords; about four characters a
# token leaves this much text before faster-whisper would cut it mid-word.
HOTWORDS_MAX_CHARS = 600


def facility_hotwords(session: Session, facility_id: int, limit: int = HOTWORDS_MAX_CHARS) -> str:
    """The facility's name, then its sensors' codes and descriptions, as decoding hotwords.

    Operators say "PT two oh one" and "the flare knockout drum"; handing the model those
    terms makes it more likely to spell them as the plant does (see :func:`vocabulary`).
    """
    name = session.scalar(select(Facility.name).where(Facility.id == facility_id))
    sensors = session.execute(
        select(Sensor.code, Sensor.description)
        .where(Sensor.facility_id == facility_id)
        .order_by(Sensor.code)
    )
    return vocabulary(name, [(row.code, row.description) for row in sensors], limit)


def vocabulary(
    name: str | None, sensors: Iterable[tuple[str, str | None]], limit: int = HOTWORDS_MAX_CHARS
) -> str:
    """A facility's ``name``, then each of its ``sensors``' code and description, as one
    comma-separated string of at most ``limit`` characters, cut between terms.

    All of them: tried against the codes alone (and against the terms as an initial prompt),
    the whole vocabulary spelled the codes right as often and gave the lowest WER on notes
    that name the plant's equipment (docs/benchmarks.md, accuracy).
    """
    terms: list[str] = [name] if name else []
    for code, description in sensors:
        terms.append(code)
        if description:
            terms.append(description)
    chosen: list[str] = []
    seen: set[str] = set()
    length = 0
    for term in terms:
        term = " ".join(term.split())
        if not term or term.lower() in seen:
            continue
        if length + len(term) + 2 > limit:
            break
        seen.add(term.lower())
        chosen.append(term)
        length += len(term) + 2
    return ", ".join(chosen)


def options_for_audio(
    session: Session, audio_object_id: int, settings: Settings
) -> TranscribeOptions:
    """The options to transcribe one audio object with: the configured ones, and for audio
    placed at a facility (with no ``TRANSCRIBER_HOTWORDS`` set, and
    ``TRANSCRIBER_FACILITY_HOTWORDS`` on) the facility's vocabulary."""
    options = TranscribeOptions.from_settings(settings)
    if options.hotwords or not settings.facility_hotwords:
        return options
    facility_id = session.scalar(
        select(AudioObject.facility_id).where(AudioObject.id == audio_object_id)
    )
    if facility_id is None:
        return options
    return replace(options, hotwords=facility_hotwords(session, facility_id) or None)
