"""The SQL interface: segment_readings, full-text search, latest_transcripts, constraints."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Connection, Engine, delete, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from transcriber import migrate
from transcriber.db import make_engine
from transcriber.schema import (
    AudioObject,
    Facility,
    Sensor,
    SensorReading,
    Transcript,
    TranscriptionJob,
    TranscriptSegment,
    TranscriptWord,
)

WINDOW = timedelta(seconds=300)  # the documented segment_readings window
# Recorded at 10:00 local time, two hours east of UTC: the view must work in UTC.
RECORDED_AT = datetime(2026, 3, 14, 12, 0, tzinfo=timezone(timedelta(hours=2)))


@dataclass
class Scene:
    facility_id: int
    other_facility_id: int
    audio_id: int
    job_id: int
    transcript_id: int
    segment_ids: list[int]


def _audio(session: Session, key: str, facility: Facility | None, **kw: object) -> AudioObject:
    audio = AudioObject(
        bucket="audio",
        key=key,
        version_id=str(kw.pop("version_id", "v1")),
        etag=str(kw.pop("etag", "e1")),
        size_bytes=1000,
        facility_id=facility.id if facility else None,
        recorded_at=RECORDED_AT,
        recorded_at_source="key",
        meta={"facility": facility.code if facility else "unknown"},
    )
    session.add(audio)
    session.flush()
    return audio


def _transcript(
    session: Session, audio: AudioObject, texts: list[tuple[float, float, str]]
) -> Transcript:
    job = TranscriptionJob(audio_object_id=audio.id, status="succeeded", options={})
    session.add(job)
    session.flush()
    transcript = Transcript(
        job_id=job.id,
        audio_object_id=audio.id,
        language="en",
        duration_s=40.0,
        text=" ".join(t for _, _, t in texts),
        model="tiny.en",
    )
    session.add(transcript)
    session.flush()
    for idx, (start, end, words) in enumerate(texts):
        segment = TranscriptSegment(
            transcript_id=transcript.id,
            idx=idx,
            start_s=start,
            end_s=end,
            starts_at=audio.recorded_at + timedelta(seconds=start),
            ends_at=audio.recorded_at + timedelta(seconds=end),
            text=words,
        )
        session.add(segment)
        session.flush()
        for widx, word in enumerate(words.split()):
            session.add(
                TranscriptWord(
                    segment_id=segment.id,
                    idx=widx,
                    start_s=start + widx * 0.3,
                    end_s=start + widx * 0.3 + 0.25,
                    starts_at=segment.starts_at + timedelta(seconds=widx * 0.3),
                    word=word,
                    probability=0.9,
                )
            )
    session.flush()
    return transcript


def _seed(engine: Engine) -> Scene:
    with Session(engine) as session, session.begin():
        plant = Facility(code="plant-a", name="Plant A", timezone="Europe/Berlin")
        other = Facility(code="plant-b", name="Plant B")
        session.add_all([plant, other])
        session.flush()
        sensors = [
            Sensor(facility_id=plant.id, code="PT-1", kind="pressure", unit="kPa"),
            Sensor(facility_id=plant.id, code="TT-1", kind="temperature", unit="°C"),
            Sensor(facility_id=other.id, code="PT-1", kind="pressure", unit="kPa"),
        ]
        session.add_all(sensors)
        session.flush()
        start = RECORDED_AT - timedelta(minutes=10)
        for sensor in sensors:
            for minute in range(31):
                ts = start + timedelta(minutes=minute)
                session.add(SensorReading(sensor_id=sensor.id, ts=ts, value=float(minute)))
        # Right at the edges of the first segment's window, to the millisecond.
        first_start = RECORDED_AT
        first_end = RECORDED_AT + timedelta(seconds=4)
        for ts in (
            first_start - WINDOW - timedelta(milliseconds=1),
            first_end + WINDOW,
            first_end + WINDOW + timedelta(milliseconds=1),
        ):
            session.add(SensorReading(sensor_id=sensors[0].id, ts=ts, value=-1.0))
        audio = _audio(session, "plant-a/PT-1/20260314T100000.wav", plant)
        transcript = _transcript(
            session,
            audio,
            [
                (0.0, 4.0, "The pressure valves on line four are leaking"),
                (30.0, 35.5, "Temperature is rising in the boiler room"),
            ],
        )
        # Audio with no facility: its segments join no readings.
        _transcript(session, _audio(session, "misc/note.wav", None), [(0.0, 2.0, "valve")])
        segment_ids = list(
            session.scalars(
                select(TranscriptSegment.id)
                .where(TranscriptSegment.transcript_id == transcript.id)
                .order_by(TranscriptSegment.idx)
            )
        )
        return Scene(plant.id, other.id, audio.id, transcript.job_id, transcript.id, segment_ids)


def test_segment_readings_returns_exactly_the_readings_in_the_window(db: Engine) -> None:
    scene = _seed(db)
    with Session(db) as session:
        segments = session.scalars(
            select(TranscriptSegment).where(TranscriptSegment.id.in_(scene.segment_ids))
        ).all()
        readings = session.execute(
            select(Sensor.code, SensorReading.ts)
            .join(SensorReading, SensorReading.sensor_id == Sensor.id)
            .where(Sensor.facility_id == scene.facility_id)
        ).all()
    expected = {
        (segment.id, code, ts)
        for segment in segments
        for code, ts in readings
        if segment.starts_at - WINDOW <= ts <= segment.ends_at + WINDOW
    }
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT segment_id, sensor_code, reading_ts, facility_code, offset_s "
                "FROM segment_readings"
            )
        ).all()
    got = {(r.segment_id, r.sensor_code, _utc(r.reading_ts)) for r in rows}
    assert got == expected
    assert len(rows) == len(expected)  # no duplicates either
    assert {r.facility_code for r in rows} == {"plant-a"}
    # 11 minute readings per sensor for the first segment, plus the edge reading at the end.
    assert sum(1 for s, c, _ in got if s == scene.segment_ids[0] and c == "PT-1") == 12
    first = next(r for r in rows if _utc(r.reading_ts) == RECORDED_AT - timedelta(minutes=5))
    assert first.offset_s == pytest.approx(-300.0, abs=1e-3)


def _utc(value: datetime | str) -> datetime:
    """A timestamp from a raw SQL row: SQLite returns the stored UTC text."""
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _search(conn: Connection, query: str) -> set[int]:
    """Segment ids matching ``query`` by the documented full-text SQL of each dialect."""
    if conn.dialect.name == "postgresql":
        sql = (
            "SELECT id FROM transcript_segments "
            "WHERE text_search @@ websearch_to_tsquery('english', :q)"
        )
    else:
        sql = "SELECT rowid FROM transcript_segments_fts WHERE transcript_segments_fts MATCH :q"
    return set(conn.execute(text(sql), {"q": query}).scalars())


def test_full_text_search_finds_segments_by_word(db: Engine) -> None:
    scene = _seed(db)
    first, second = scene.segment_ids
    with db.connect() as conn:
        assert _search(conn, "boiler") == {second}
        assert first in _search(conn, "valve")  # stemmed: "valves" in the text
        assert _search(conn, "pressure leaking") == {first}
        assert _search(conn, "turbine") == set()


def test_full_text_index_follows_updates_and_deletes(db: Engine) -> None:
    scene = _seed(db)
    first, second = scene.segment_ids
    with db.begin() as conn:
        conn.execute(
            update(TranscriptSegment)
            .where(TranscriptSegment.id == second)
            .values(text="Compressor tripped")
        )
    with db.connect() as conn:
        assert _search(conn, "boiler") == set()
        assert _search(conn, "compressor") == {second}
    with db.begin() as conn:  # cascades to the segments
        conn.execute(delete(Transcript).where(Transcript.id == scene.transcript_id))
    with db.connect() as conn:
        assert _search(conn, "compressor") == set()
        assert first not in _search(conn, "valve")


def test_latest_transcripts_shows_the_newest_per_object(db: Engine) -> None:
    scene = _seed(db)
    with Session(db) as session, session.begin():
        audio = session.get_one(AudioObject, scene.audio_id)
        newer_id = _transcript(session, audio, [(0.0, 3.0, "A second opinion")]).id
        session.execute(
            update(AudioObject)
            .where(AudioObject.id == audio.id)
            .values(
                sensor_id=select(Sensor.id).where(Sensor.code == "PT-1").limit(1).scalar_subquery()
            )
        )
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT transcript_id, facility_code, sensor_code, text "
                "FROM latest_transcripts WHERE audio_object_id = :a"
            ),
            {"a": scene.audio_id},
        ).all()
        total = conn.execute(text("SELECT count(*) FROM latest_transcripts")).scalar_one()
    assert [(r.transcript_id, r.facility_code, r.text) for r in rows] == [
        (newer_id, "plant-a", "A second opinion")
    ]
    assert rows[0].sensor_code == "PT-1"
    assert total == 2  # one per object key


def test_one_row_per_object_version(db: Engine) -> None:
    with Session(db) as session, session.begin():
        _audio(session, "k.wav", None, version_id="v1", etag="e1")
        _audio(session, "k.wav", None, version_id="v2", etag="e1")  # new version
        _audio(session, "k.wav", None, version_id="", etag="e2")  # unversioned bucket
    with pytest.raises(IntegrityError), Session(db) as session, session.begin():
        _audio(session, "k.wav", None, version_id="v1", etag="e1")


def test_one_transcript_per_job(db: Engine) -> None:
    scene = _seed(db)
    with pytest.raises(IntegrityError), Session(db) as session, session.begin():
        session.add(
            Transcript(
                job_id=scene.job_id,
                audio_object_id=scene.audio_id,
                duration_s=1.0,
                text="again",
                model="tiny.en",
            )
        )


def test_job_status_is_constrained(db: Engine) -> None:
    scene = _seed(db)
    with pytest.raises(IntegrityError), db.begin() as conn:
        conn.execute(
            update(TranscriptionJob)
            .where(TranscriptionJob.id == scene.job_id)
            .values(status="exploded")
        )


def test_deleting_a_facility_keeps_its_audio_and_transcripts(db: Engine) -> None:
    scene = _seed(db)
    with db.begin() as conn:
        conn.execute(delete(Facility).where(Facility.id == scene.facility_id))
    with Session(db) as session:
        audio = session.get_one(AudioObject, scene.audio_id)
        assert audio.facility_id is None
        assert audio.meta == {"facility": "plant-a"}
        assert session.get(Transcript, scene.transcript_id) is not None
        codes = session.scalars(select(Sensor.facility_id)).all()
        assert set(codes) == {scene.other_facility_id}
        orphans = session.scalar(
            select(func.count())
            .select_from(SensorReading)
            .join(Sensor, isouter=True)
            .where(Sensor.id.is_(None))
        )
        assert orphans == 0


def test_deleting_an_audio_object_removes_its_jobs_and_transcripts(db: Engine) -> None:
    scene = _seed(db)
    with db.begin() as conn:
        conn.execute(delete(AudioObject).where(AudioObject.id == scene.audio_id))
    with Session(db) as session:
        assert session.get(TranscriptionJob, scene.job_id) is None
        assert session.get(Transcript, scene.transcript_id) is None
        left = session.scalars(
            select(TranscriptSegment.id).where(TranscriptSegment.id.in_(scene.segment_ids))
        ).all()
        assert left == []
        words = session.scalar(
            select(func.count())
            .select_from(TranscriptWord)
            .where(TranscriptWord.segment_id.in_(scene.segment_ids))
        )
        assert words == 0


def test_timestamps_round_trip_as_aware_utc(db: Engine) -> None:
    scene = _seed(db)
    with Session(db) as session:
        audio = session.get_one(AudioObject, scene.audio_id)
    assert audio.recorded_at == RECORDED_AT
    assert audio.recorded_at.utcoffset() == timedelta(0)


# --- transcript_segments.facility_id (migration 0006) ----------------------------------------

SEGMENT_READINGS_ALL = (
    "SELECT segment_id, transcript_id, job_id, audio_object_id, facility_id, facility_code, "
    "channel, starts_at, ends_at, text, sensor_id, sensor_code, sensor_kind, sensor_unit, "
    "reading_ts, reading_value, offset_s FROM {view}"
)


def _old_view(conn: Connection) -> None:
    """segment_readings as 0001 made it (the facility through the audio object), beside the
    new one, as ``segment_readings_0001``."""
    migration = importlib.import_module("transcriber.migrations.versions.0006_segment_facility")
    sql = migration.OLD_SEGMENT_READINGS[conn.dialect.name]
    conn.execute(text("DROP VIEW IF EXISTS segment_readings_0001"))
    conn.execute(text(sql.replace("VIEW segment_readings AS", "VIEW segment_readings_0001 AS")))


def _answers(conn: Connection, view: str) -> list[tuple[object, ...]]:
    return sorted(
        (tuple(row) for row in conn.execute(text(SEGMENT_READINGS_ALL.format(view=view)))),
        key=repr,
    )


def test_segment_readings_answers_as_before_the_facility_moved_to_segments(db: Engine) -> None:
    scene = _seed(db)
    with Session(db) as session, session.begin():
        # Another facility's audio, and an object moved to another facility after it was
        # transcribed (a placement fixed by hand): the segments follow it.
        other = session.get_one(Facility, scene.other_facility_id)
        moved = _audio(session, "plant-a/PT-1/20260314T100500.wav", other, etag="e2")
        _transcript(session, moved, [(0.0, 3.0, "moved to plant b")])
        session.execute(
            update(AudioObject)
            .where(AudioObject.id == moved.id)
            .values(facility_id=scene.facility_id)
        )
    with db.begin() as conn:
        _old_view(conn)
        new = _answers(conn, "segment_readings")
        old = _answers(conn, "segment_readings_0001")
        conn.execute(text("DROP VIEW segment_readings_0001"))
    assert len(new) > 50
    assert new == old


def test_segment_facility_is_kept_by_the_database(db: Engine) -> None:
    scene = _seed(db)

    def facilities() -> dict[int, int | None]:
        with Session(db) as session:
            rows = session.execute(select(TranscriptSegment.id, TranscriptSegment.facility_id))
            return {row.id: row.facility_id for row in rows}

    # Written without it: each segment took its audio object's facility (NULL for none).
    got = facilities()
    assert {got[i] for i in scene.segment_ids} == {scene.facility_id}
    assert None in got.values()
    # The object placed again: its segments follow, the others stay.
    with db.begin() as conn:
        conn.execute(
            update(AudioObject)
            .where(AudioObject.id == scene.audio_id)
            .values(facility_id=scene.other_facility_id)
        )
    after = facilities()
    assert {after[i] for i in scene.segment_ids} == {scene.other_facility_id}
    assert {k: v for k, v in after.items() if k not in scene.segment_ids} == {
        k: v for k, v in got.items() if k not in scene.segment_ids
    }
    # The facility deleted: NULL, as on the audio object, and the segments stay.
    with db.begin() as conn:
        conn.execute(delete(Facility).where(Facility.id == scene.other_facility_id))
    final = facilities()
    assert set(final) == set(got)
    assert {final[i] for i in scene.segment_ids} == {None}


def test_upgrade_fills_the_facility_of_segments_there_are(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url, "0005")
    engine = make_engine(empty_db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO facilities (code, name) VALUES ('plant-a', 'A')"))
            facility = conn.execute(text("SELECT id FROM facilities")).scalar_one()
            audio = conn.execute(
                text(
                    "INSERT INTO audio_objects (bucket, key, version_id, etag, size_bytes, "
                    "facility_id, recorded_at, recorded_at_source, metadata, first_seen_at) "
                    "VALUES ('b', 'k', '', 'e', 1, :f, :at, 'key', '{}', :at) RETURNING id"
                ),
                {"f": facility, "at": RECORDED_AT},
            ).scalar_one()
            job = conn.execute(
                text(
                    "INSERT INTO transcription_jobs (audio_object_id, status, attempts, options, "
                    "queued_at) VALUES (:a, 'succeeded', 1, '{}', :at) RETURNING id"
                ),
                {"a": audio, "at": RECORDED_AT},
            ).scalar_one()
            transcript = conn.execute(
                text(
                    "INSERT INTO transcripts (job_id, audio_object_id, duration_s, text, model, "
                    "created_at) VALUES (:j, :a, 1, 'hello', 'tiny.en', :at) RETURNING id"
                ),
                {"j": job, "a": audio, "at": RECORDED_AT},
            ).scalar_one()
            conn.execute(
                text(
                    "INSERT INTO transcript_segments (transcript_id, idx, channel, start_s, end_s, "
                    "starts_at, ends_at, text) VALUES (:t, 0, 0, 0, 1, :at, :at, 'hello')"
                ),
                {"t": transcript, "at": RECORDED_AT},
            )
        migrate.upgrade(empty_db_url)
        with engine.connect() as conn:
            filled = conn.execute(text("SELECT facility_id FROM transcript_segments")).scalar()
            # The full-text index still follows the table (SQLite's triggers made again).
            conn.execute(text("UPDATE transcript_segments SET text = 'pressure valve'"))
            hits = _search(conn, "valve")
        assert filled == facility
        assert len(hits) == 1
        migrate.downgrade(empty_db_url, "0005")
        migrate.upgrade(empty_db_url)
    finally:
        engine.dispose()
