"""Transcriptions to SQL rows and back, and the domain vocabulary a facility lends the model.

:func:`save_transcription` writes one job's transcript, segments and words in the caller's
transaction, replacing whatever an earlier run of the same job wrote, so that a job that runs
twice (a redelivered message, a retry) still ends with exactly one transcript.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from transcriber.config import Settings
from transcriber.engine import TranscribeOptions
from transcriber.results import Segment, Transcription, Word
from transcriber.schema import (
    AudioObject,
    Facility,
    Sensor,
    Transcript,
    TranscriptionJob,
    TranscriptSegment,
    TranscriptWord,
)

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


def save_transcription(session: Session, job_id: int, result: Transcription) -> int:
    """Write ``result`` as the transcript of job ``job_id`` and return the transcript's id.

    Runs in the caller's transaction (commit it together with the job's new status). Any
    transcript the job already has is deleted first, with its segments and words.
    """
    job = session.get(TranscriptionJob, job_id)
    if job is None:
        raise LookupError(f"transcription job {job_id} does not exist")
    audio = session.get_one(AudioObject, job.audio_object_id)
    session.execute(delete(Transcript).where(Transcript.job_id == job_id))
    transcript_id = session.scalars(
        insert(Transcript).returning(Transcript.id),
        [
            {
                "job_id": job_id,
                "audio_object_id": audio.id,
                "language": result.language,
                "language_probability": result.language_probability,
                "duration_s": result.duration_s,
                "text": result.text,
                "model": result.model,
                "processing_s": result.processing_s,
            }
        ],
    ).one()
    segments = [s for s in result.segments if s.text.strip()]
    if segments:
        at = audio.recorded_at
        segment_ids = session.scalars(
            insert(TranscriptSegment).returning(TranscriptSegment.id, sort_by_parameter_order=True),
            [_segment_row(transcript_id, idx, s, at) for idx, s in enumerate(segments)],
        ).all()
        words = [
            _word_row(segment_id, idx, w, at)
            for segment_id, segment in zip(segment_ids, segments, strict=True)
            for idx, w in enumerate(segment.words)
        ]
        if words:
            session.execute(insert(TranscriptWord), words)
    session.execute(
        update(TranscriptionJob)
        .where(TranscriptionJob.id == job_id)
        .values(
            options=result.options,
            model=result.model,
            device=result.device,
            compute_type=result.compute_type,
        )
    )
    return transcript_id


def _segment_row(transcript_id: int, idx: int, s: Segment, at: Any) -> dict[str, Any]:
    return {
        "transcript_id": transcript_id,
        "idx": idx,
        "channel": s.channel,
        "start_s": s.start,
        "end_s": max(s.end, s.start),
        "starts_at": at + timedelta(seconds=s.start),
        "ends_at": at + timedelta(seconds=max(s.end, s.start)),
        "text": s.text.strip(),
        "avg_logprob": s.avg_logprob,
        "no_speech_prob": s.no_speech_prob,
        "compression_ratio": s.compression_ratio,
    }


def _word_row(segment_id: int, idx: int, w: Word, at: Any) -> dict[str, Any]:
    return {
        "segment_id": segment_id,
        "idx": idx,
        "start_s": w.start,
        "end_s": max(w.end, w.start),
        "starts_at": at + timedelta(seconds=w.start),
        "word": w.word.strip(),
        "probability": w.probability,
    }


def load_transcription(session: Session, job_id: int) -> Transcription | None:
    """The stored transcript of job ``job_id`` as a :class:`Transcription`, or None."""
    transcript = session.scalars(select(Transcript).where(Transcript.job_id == job_id)).first()
    if transcript is None:
        return None
    job = session.get_one(TranscriptionJob, job_id)
    rows = session.scalars(
        select(TranscriptSegment)
        .where(TranscriptSegment.transcript_id == transcript.id)
        .order_by(TranscriptSegment.idx)
    ).all()
    words: dict[int, list[Word]] = {}
    for word in session.scalars(
        select(TranscriptWord)
        .join(TranscriptSegment)
        .where(TranscriptSegment.transcript_id == transcript.id)
        .order_by(TranscriptWord.segment_id, TranscriptWord.idx)
    ):
        words.setdefault(word.segment_id, []).append(
            Word(word.start_s, word.end_s, word.word, word.probability)
        )
    segments = tuple(
        Segment(
            start=row.start_s,
            end=row.end_s,
            text=row.text,
            channel=row.channel,
            avg_logprob=row.avg_logprob,
            no_speech_prob=row.no_speech_prob,
            compression_ratio=row.compression_ratio,
            words=tuple(words.get(row.id, ())),
        )
        for row in rows
    )
    return Transcription(
        language=transcript.language,
        language_probability=transcript.language_probability,
        duration_s=transcript.duration_s,
        segments=segments,
        model=transcript.model,
        processing_s=transcript.processing_s,
        options=dict(job.options or {}),
        device=job.device,
        compute_type=job.compute_type,
    )
