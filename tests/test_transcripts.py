"""Transcriptions into SQL: one transcript per job, wall-clock times, words, the way back."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from tests.support.databases import create_job
from transcriber.config import Settings
from transcriber.job_options import HOTWORDS_MAX_CHARS, facility_hotwords, options_for_audio
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
from transcriber.transcripts import load_transcription, save_transcription

RECORDED_AT = datetime(2026, 5, 4, 8, 30, tzinfo=UTC)

RESULT = Transcription(
    language="en",
    language_probability=0.98,
    duration_s=12.0,
    segments=(
        Segment(
            0.5,
            3.25,
            "Pressure is rising.",
            0,
            -0.2,
            0.01,
            1.1,
            (
                Word(0.5, 1.0, " Pressure", 0.9),
                Word(1.0, 1.3, " is", 0.95),
                Word(1.3, 3.25, " rising.", 0.8),
            ),
        ),
        Segment(
            4.0,
            6.5,
            "Checking the valve.",
            1,
            -0.3,
            0.02,
            1.2,
            (
                Word(4.0, 5.0, " Checking", 0.9),
                Word(5.0, 5.5, " the", 0.99),
                Word(5.5, 6.5, " valve.", 0.7),
            ),
        ),
        Segment(7.0, 7.5, "   ", 0),  # nothing said: not stored
    ),
    model="tiny.en",
    processing_s=1.5,
    options={"beam_size": 5, "hotwords": "PT-201"},
    device="cpu",
    compute_type="int8",
)


def _job(engine: Engine) -> int:
    return create_job(engine, RECORDED_AT)


def _save(engine: Engine, job_id: int, result: Transcription) -> int:
    with Session(engine) as session, session.begin():
        return save_transcription(session, job_id, result)


def test_segments_and_words_get_wall_clock_times(db: Engine) -> None:
    job_id = _job(db)
    transcript_id = _save(db, job_id, RESULT)
    with Session(db) as session:
        transcript = session.get_one(Transcript, transcript_id)
        assert transcript.text == "Pressure is rising. Checking the valve."
        segments = session.scalars(select(TranscriptSegment).order_by(TranscriptSegment.idx)).all()
        assert [(s.idx, s.channel, s.text) for s in segments] == [
            (0, 0, "Pressure is rising."),
            (1, 1, "Checking the valve."),
        ]
        assert segments[0].starts_at == RECORDED_AT + timedelta(seconds=0.5)
        assert segments[0].ends_at == RECORDED_AT + timedelta(seconds=3.25)
        assert segments[1].starts_at == RECORDED_AT + timedelta(seconds=4)
        words = session.scalars(
            select(TranscriptWord)
            .where(TranscriptWord.segment_id == segments[1].id)
            .order_by(TranscriptWord.idx)
        ).all()
        assert [w.word for w in words] == ["Checking", "the", "valve."]
        assert words[2].starts_at == RECORDED_AT + timedelta(seconds=5.5)
        job = session.get_one(TranscriptionJob, job_id)
        assert (job.model, job.device, job.compute_type) == ("tiny.en", "cpu", "int8")
        assert job.options == {"beam_size": 5, "hotwords": "PT-201"}


def test_running_a_job_again_replaces_its_transcript(db: Engine) -> None:
    job_id = _job(db)
    _save(db, job_id, RESULT)
    shorter = replace(RESULT, segments=RESULT.segments[1:2])
    _save(db, job_id, shorter)
    with Session(db) as session:
        assert session.scalar(select(func.count()).select_from(Transcript)) == 1
        assert session.scalars(select(TranscriptSegment.text)).all() == ["Checking the valve."]
        assert session.scalar(select(func.count()).select_from(TranscriptWord)) == 3


def test_empty_transcription_is_stored_as_an_empty_transcript(db: Engine) -> None:
    job_id = _job(db)
    _save(db, job_id, replace(RESULT, segments=()))
    with Session(db) as session:
        assert session.scalar(select(Transcript.text)) == ""
        assert session.scalar(select(func.count()).select_from(TranscriptSegment)) == 0


def test_load_transcription_gives_back_what_was_saved(db: Engine) -> None:
    job_id = _job(db)
    _save(db, job_id, RESULT)
    with Session(db) as session:
        loaded = load_transcription(session, job_id)
        assert load_transcription(session, job_id + 1000) is None
    assert loaded is not None
    expected = tuple(
        replace(s, words=tuple(replace(w, word=w.word.strip()) for w in s.words))
        for s in RESULT.segments
        if s.text.strip()
    )
    assert loaded.segments == expected
    assert (loaded.language, loaded.model, loaded.duration_s) == ("en", "tiny.en", 12.0)
    assert loaded.options == RESULT.options


def test_unknown_job_is_an_error(db: Engine) -> None:
    with pytest.raises(LookupError), Session(db) as session:
        save_transcription(session, 999_999, RESULT)


def test_facility_hotwords_name_codes_and_descriptions_bounded(db: Engine) -> None:
    with Session(db) as session, session.begin():
        plant = Facility(code="north", name="North Refinery")
        session.add(plant)
        session.flush()
        session.add_all(
            [
                Sensor(
                    facility_id=plant.id,
                    code="PT-201",
                    kind="pressure",
                    unit="kPa",
                    description="Column head pressure",
                ),
                Sensor(
                    facility_id=plant.id,
                    code="TT-101",
                    kind="temperature",
                    unit="°C",
                    description="Column head pressure",
                ),  # repeated description: once
            ]
            + [
                Sensor(
                    facility_id=plant.id,
                    code=f"XT-{n:03d}",
                    kind="pressure",
                    unit="kPa",
                    description=f"Very long description of auxiliary transmitter number {n}",
                )
                for n in range(100)
            ]
        )
        session.flush()
        words = facility_hotwords(session, plant.id)
    assert words.startswith("North Refinery, PT-201, Column head pressure, TT-101, XT-000")
    assert words.count("Column head pressure") == 1
    assert len(words) <= HOTWORDS_MAX_CHARS
    last = words.split(", ")[-1]
    assert last.startswith(("XT-", "Very long description of auxiliary transmitter number"))
    assert last[-1].isdigit()  # cut between terms, never inside one


def test_audio_at_a_facility_gets_its_vocabulary_as_hotwords(db: Engine) -> None:
    job_id = _job(db)
    with Session(db) as session, session.begin():
        plant = Facility(code="east", name="East Works")
        session.add(plant)
        session.flush()
        session.add(Sensor(facility_id=plant.id, code="FT-7", kind="flow", unit="m3/h"))
        audio_id = session.get_one(TranscriptionJob, job_id).audio_object_id
        assert options_for_audio(session, audio_id, Settings()).hotwords is None  # no facility
        session.get_one(AudioObject, audio_id).facility_id = plant.id
        session.flush()
        assert options_for_audio(session, audio_id, Settings()).hotwords == "East Works, FT-7"
        # Hotwords set in the settings win over the facility's.
        chosen = options_for_audio(session, audio_id, Settings(hotwords="Tag 12"))
        assert chosen.hotwords == "Tag 12"
        assert chosen.beam_size == Settings().beam_size
        # Turned off, the facility's vocabulary is not used.
        off = Settings(facility_hotwords=False)
        assert options_for_audio(session, audio_id, off).hotwords is None
