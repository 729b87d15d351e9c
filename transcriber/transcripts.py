"""Transcriptions to SQL rows and back.

:func:`save_transcription` writes one job's transcript, segments and words in the caller's
transaction, replacing whatever an earlier run of the same job wrote, so that a job that runs
twice (a redelivered message, a retry) still ends with exactly one transcript.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from transcriber.results import Segment, Transcription, Word
from transcriber.schema import (
    AudioObject,
    Transcript,
    TranscriptionJob,
    TranscriptSegment,
    TranscriptWord,
)


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
