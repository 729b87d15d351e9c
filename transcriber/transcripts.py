"""Transcriptions to SQL rows and back.

:func:`save_transcription` writes one job's transcript, segments, words and the sensor
readings said in it (``transcript_mentions``, found by :func:`transcriber.mentions.extract`)
in the caller's transaction, replacing whatever an earlier run of the same job wrote, so that
a job that runs twice (a redelivered message, a retry) still ends with exactly one transcript,
and its mentions always come from its own text. :func:`save_mentions` is the one writer of
mentions, for a job's save and for ``transcriber mentions rebuild``
(:mod:`transcriber.mention_rebuild`) alike.

Back out: :func:`load_transcription` (a job's transcript), :func:`stored_segments` (a
transcript's segments and words as extraction reads them) and :func:`load_spoken_readings`
(its mentions next to the sensors' readings, for exports).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Double,
    Text,
    column,
    delete,
    insert,
    select,
    table,
    update,
)
from sqlalchemy.orm import Session

from transcriber.config import ReadingTolerance
from transcriber.mentions import FacilitySensor, Mention, extract
from transcriber.results import Segment, SpokenReading, Transcription, Word
from transcriber.schema import (
    AudioObject,
    Sensor,
    Transcript,
    TranscriptionJob,
    TranscriptMention,
    TranscriptSegment,
    TranscriptWord,
    UTCDateTime,
)


def save_transcription(
    session: Session,
    job_id: int,
    result: Transcription,
    tolerances: Mapping[str, ReadingTolerance] | None = None,
) -> int:
    """Write ``result`` as the transcript of job ``job_id`` and return the transcript's id.

    Runs in the caller's transaction (commit it together with the job's new status). Any
    transcript the job already has is deleted first, with its segments, words and mentions.
    ``tolerances`` (sensor kind → tolerance, ``Settings.tolerance_by_kind``) are written on
    the mentions of sensors of those kinds; without them no mention has a tolerance.
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
        save_mentions(session, transcript_id, audio, segments, segment_ids, tolerances or {})
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


def save_mentions(
    session: Session,
    transcript_id: int,
    audio: AudioObject,
    segments: Sequence[Segment],
    segment_ids: Sequence[int],
    tolerances: Mapping[str, ReadingTolerance],
) -> list[Mention]:
    """Write the readings said in ``segments`` (as stored: ``segment_ids`` in the same order),
    attributed to the sensors the audio's facility has now (unattributed where it has none),
    and return them. The transcript must have no mentions yet: a job's save writes a new
    transcript, :mod:`transcriber.mention_rebuild` deletes them first."""
    sensors = [
        FacilitySensor(row.id, row.code, row.kind, row.unit, row.description)
        for row in session.execute(
            select(Sensor.id, Sensor.code, Sensor.kind, Sensor.unit, Sensor.description)
            .where(Sensor.facility_id == audio.facility_id)
            .order_by(Sensor.id)
        )
    ]
    mentions = extract(
        segments, sensors, recorded_at=audio.recorded_at, own_sensor_id=audio.sensor_id
    )
    if not mentions:
        return mentions
    kinds = {sensor.id: sensor.kind.strip().lower() for sensor in sensors}
    rows = []
    for idx, m in enumerate(mentions):
        tolerance = ReadingTolerance()
        if m.sensor_id is not None:
            tolerance = tolerances.get(kinds[m.sensor_id], tolerance)
        rows.append(
            {
                "transcript_id": transcript_id,
                "segment_id": segment_ids[m.segment],
                "facility_id": audio.facility_id,
                "sensor_id": m.sensor_id,
                "idx": idx,
                "start_s": m.start_s,
                "end_s": max(m.end_s, m.start_s),
                "said_at": m.said_at,
                "spoken_text": m.text,
                "sensor_text": m.sensor_text,
                "spoken_value": m.spoken_value,
                "spoken_unit": m.spoken_unit,
                "value_in_sensor_unit": m.value_in_sensor_unit,
                "attribution": m.attribution,
                "match_score": m.score,
                "probability": m.min_probability,
                "tolerance_abs": tolerance.absolute,
                "tolerance_pct": tolerance.percent,
            }
        )
    session.execute(insert(TranscriptMention), rows)
    return mentions


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
    _, segments = stored_segments(session, transcript.id)
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


def stored_segments(session: Session, transcript_id: int) -> tuple[list[int], tuple[Segment, ...]]:
    """The stored segments of transcript ``transcript_id`` in order, with their words, and
    their ids in the same order (what :func:`save_mentions` takes)."""
    rows = session.scalars(
        select(TranscriptSegment)
        .where(TranscriptSegment.transcript_id == transcript_id)
        .order_by(TranscriptSegment.idx)
    ).all()
    words: dict[int, list[Word]] = {}
    for word in session.scalars(
        select(TranscriptWord)
        .join(TranscriptSegment)
        .where(TranscriptSegment.transcript_id == transcript_id)
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
    return [row.id for row in rows], segments


# The spoken_readings view (migration 0005) as far as exports read it; typed, so that both
# dialects give back aware datetimes and booleans (SQLite stores UTC text and 0/1).
_SPOKEN_READINGS = table(
    "spoken_readings",
    column("mention_id", BigInteger()),
    column("job_id", BigInteger()),
    column("said_at", UTCDateTime()),
    column("spoken_text", Text()),
    column("spoken_value", Double()),
    column("spoken_unit", Text()),
    column("sensor_code", Text()),
    column("sensor_unit", Text()),
    column("value_in_sensor_unit", Double()),
    column("attribution", Text()),
    column("sensor_text", Text()),
    column("match_score", Double()),
    column("probability", Double()),
    column("reading_ts", UTCDateTime()),
    column("reading_value", Double()),
    column("difference", Double()),
    column("agrees", Boolean()),
)


def load_spoken_readings(session: Session, job_id: int) -> list[SpokenReading]:
    """The readings said in job ``job_id``'s stored transcript, in the order said, each next
    to its sensor's nearest reading (the ``spoken_readings`` view); [] when it has none."""
    view = _SPOKEN_READINGS.c
    rows = session.execute(
        select(_SPOKEN_READINGS, TranscriptMention.start_s, TranscriptMention.end_s)
        .join(TranscriptMention, TranscriptMention.id == view.mention_id)
        .where(view.job_id == job_id)
        .order_by(TranscriptMention.idx)
    )
    return [
        SpokenReading(
            start=row.start_s,
            end=row.end_s,
            said_at=row.said_at,
            spoken_text=row.spoken_text,
            spoken_value=row.spoken_value,
            spoken_unit=row.spoken_unit,
            sensor_code=row.sensor_code,
            sensor_unit=row.sensor_unit,
            value_in_sensor_unit=row.value_in_sensor_unit,
            attribution=row.attribution,
            sensor_text=row.sensor_text,
            match_score=row.match_score,
            probability=row.probability,
            reading_ts=row.reading_ts,
            reading_value=row.reading_value,
            difference=row.difference,
            agrees=row.agrees,
        )
        for row in rows
    ]
