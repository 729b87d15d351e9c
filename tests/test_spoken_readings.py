"""Readings said in transcripts, in SQL: transcript_mentions written with the transcript (and
replaced with it), and the spoken_readings view next to the sensor's nearest reading."""

from __future__ import annotations

import socket
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine, delete, func, select, text, update
from sqlalchemy.orm import Session

from tests.support.databases import create_job
from tests.support.transcripts import whisper_segment
from transcriber import jobs
from transcriber.audio import SAMPLE_RATE, DecodedAudio
from transcriber.config import ReadingTolerance, Settings, parse_reading_tolerances
from transcriber.errors import LeaseLost
from transcriber.job_options import TranscribeOptions
from transcriber.job_steps import Fetched, save
from transcriber.results import Segment, Transcription
from transcriber.schema import (
    AudioObject,
    Facility,
    Sensor,
    SensorReading,
    Transcript,
    TranscriptionJob,
    TranscriptMention,
    TranscriptSegment,
)
from transcriber.transcripts import save_transcription

README = (Path(__file__).parents[1] / "README.md").read_text()
RECORDED_AT = datetime(2026, 5, 4, 8, 30, tzinfo=UTC)
WINDOW = timedelta(seconds=300)  # the documented spoken_readings window
# Humidity is left out: its mentions have no tolerance, so agrees is NULL.
TOLERANCES = parse_reading_tolerances("temperature=2,pressure=5%")


RESULT = Transcription(
    language="en",
    language_probability=0.99,
    duration_s=40.0,
    segments=(
        whisper_segment("PT-201 is at 190 kPa.", 0.0),  # said at +1.5 s
        Segment(3.0, 3.5, "   "),  # nothing said: not stored, and no segment index taken
        whisper_segment("TT-101 reads 92 degrees.", 5.0),  # +6 s
        whisper_segment("HT-301 is 45 percent.", 10.0),  # +11 s
        whisper_segment("TT-102 is 21 degrees.", 15.0),  # +16 s
        whisper_segment("PT-202 is at 1000 kPa.", 20.0),  # +21.5 s
        whisper_segment("The steam header pressure is one point one megapascals.", 25.0),  # +27.5 s
    ),
    model="tiny.en",
)
# Said at, as an offset from RECORDED_AT, by sensor code (PT-202 twice).
SAID = {"PT-201": 1.5, "TT-101": 6.0, "HT-301": 11.0, "TT-102": 16.0, "PT-202": 21.5}


@dataclass
class Scene:
    facility_id: int
    sensors: dict[str, int]
    job_id: int
    audio_id: int


def _at(seconds: float) -> datetime:
    return RECORDED_AT + timedelta(seconds=seconds)


def _seed(engine: Engine) -> Scene:
    with Session(engine) as session, session.begin():
        plant = Facility(code="plant-a", name="Plant A")
        session.add(plant)
        session.flush()
        specs = [
            ("PT-201", "pressure", "kPa", "Column head pressure"),
            ("PT-202", "pressure", "kPa", "Steam header pressure"),
            ("TT-101", "temperature", "°C", "Heater outlet temperature"),
            ("TT-102", "temperature", "°C", "Control room temperature"),
            ("HT-301", "humidity", "%RH", "Analyser house humidity"),
        ]
        rows = [
            Sensor(facility_id=plant.id, code=c, kind=k, unit=u, description=d)
            for c, k, u, d in specs
        ]
        session.add_all(rows)
        session.flush()
        sensors = {row.code: row.id for row in rows}
        facility_id = plant.id
        readings = [
            # PT-201: one at the window's far edge (in), one a millisecond beyond the near one.
            ("PT-201", SAID["PT-201"] + 300, 188.0),
            ("PT-201", SAID["PT-201"] - 300.001, 150.0),
            # TT-101: the nearer of two, 12 °C off the 92 said.
            ("TT-101", SAID["TT-101"] - 30, 80.0),
            ("TT-101", SAID["TT-101"] + 100, 95.0),
            # HT-301: exactly at the window's near edge.
            ("HT-301", SAID["HT-301"] - 300, 47.0),
            # TT-102: a millisecond beyond the window: nothing to compare.
            ("TT-102", SAID["TT-102"] + 300.001, 21.0),
            # PT-202: as far before as after 21.5 s (the earlier wins); nearest to 27.5 s: 81.5.
            ("PT-202", SAID["PT-202"] - 60, 1040.0),
            ("PT-202", SAID["PT-202"] + 60, 1100.0),
        ]
        session.add_all(
            SensorReading(sensor_id=sensors[code], ts=_at(offset), value=value)
            for code, offset, value in readings
        )
        session.flush()
    job_id = create_job(engine, RECORDED_AT, key="plant-a/note.wav")
    with Session(engine) as session, session.begin():
        audio_id = session.get_one(TranscriptionJob, job_id).audio_object_id
        session.get_one(AudioObject, audio_id).facility_id = facility_id
    return Scene(facility_id, sensors, job_id, audio_id)


def _save(engine: Engine, job_id: int, result: Transcription = RESULT) -> int:
    with Session(engine) as session, session.begin():
        return save_transcription(session, job_id, result, TOLERANCES)


def _view(engine: Engine, where: str = "", **params: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(text(f"SELECT * FROM spoken_readings {where} ORDER BY said_at"), params)
        )


def _utc(value: datetime | str | None) -> datetime | None:
    """A timestamp from a raw SQL row: SQLite returns the stored UTC text."""
    if value is None:
        return None
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _bool(value: object) -> bool | None:
    """``agrees``: a boolean on PostgreSQL, 0 or 1 on SQLite."""
    return None if value is None else bool(value)


def test_saving_a_transcript_writes_the_readings_said_in_it(db: Engine) -> None:
    scene = _seed(db)
    transcript_id = _save(db, scene.job_id)
    with Session(db) as session:
        mentions = session.scalars(select(TranscriptMention).order_by(TranscriptMention.idx)).all()
        segments = {s.id: s for s in session.scalars(select(TranscriptSegment))}
    assert [(m.idx, m.spoken_text, m.value_in_sensor_unit) for m in mentions] == [
        (0, "190 kPa", 190.0),
        (1, "92 degrees", 92.0),
        (2, "45 percent", 45.0),
        (3, "21 degrees", 21.0),
        (4, "1000 kPa", 1000.0),
        (5, "one point one megapascals", pytest.approx(1100.0)),
    ]
    codes = {v: k for k, v in scene.sensors.items()}
    assert [codes[m.sensor_id] for m in mentions if m.sensor_id] == [
        "PT-201",
        "TT-101",
        "HT-301",
        "TT-102",
        "PT-202",
        "PT-202",
    ]
    for m in mentions:
        assert m.transcript_id == transcript_id
        assert m.facility_id == scene.facility_id
        # The segment that says it, though an empty segment before it was not stored.
        assert m.spoken_text.split()[0] in segments[m.segment_id].text
        assert m.attribution == "named"
    first = mentions[0]
    assert first.said_at == _at(1.5)
    assert (first.start_s, first.end_s) == (1.5, 2.4)
    assert (first.spoken_value, first.spoken_unit) == (190.0, "kilopascal")
    assert (first.sensor_text, first.match_score) == ("PT-201", 100.0)
    assert first.probability == pytest.approx(0.86)  # the lower of "190" (0.87) and "kPa." (0.86)
    assert mentions[5].sensor_text == "steam header pressure"
    # The tolerance of the sensor's kind when it was written; none for humidity.
    assert [(m.tolerance_abs, m.tolerance_pct) for m in mentions] == [
        (None, 5.0),
        (2.0, None),
        (None, None),
        (2.0, None),
        (None, 5.0),
        (None, 5.0),
    ]


def test_the_view_compares_each_value_with_the_nearest_reading(db: Engine) -> None:
    scene = _seed(db)
    _save(db, scene.job_id)
    rows = _view(db)
    got = [
        (
            r.sensor_code,
            _utc(r.said_at),
            _utc(r.reading_ts),
            r.reading_value,
            None if r.difference is None else round(r.difference, 6),
            _bool(r.agrees),
        )
        for r in rows
    ]
    assert got == [
        # Within 5 % of 188: the reading 300 s after is in, the one 300.001 s before is out.
        ("PT-201", _at(1.5), _at(301.5), 188.0, 2.0, True),
        # 12 °C off the nearer reading, with 2 °C allowed.
        ("TT-101", _at(6), _at(-24), 80.0, 12.0, False),
        # Compared (the reading exactly 300 s before), but humidity has no tolerance.
        ("HT-301", _at(11), _at(-289), 47.0, -2.0, None),
        # No reading within 300 s: nothing to compare.
        ("TT-102", _at(16), None, None, None, None),
        # A tie between 60 s before and 60 s after: the earlier; 40 within 5 % of 1040.
        ("PT-202", _at(21.5), _at(-38.5), 1040.0, -40.0, True),
        # Said in MPa, compared in the sensor's kPa.
        ("PT-202", _at(27.5), _at(81.5), 1100.0, 0.0, True),
    ]
    first = rows[0]
    assert (first.job_id, first.audio_object_id, first.key) == (
        scene.job_id,
        scene.audio_id,
        "plant-a/note.wav",
    )
    assert (first.facility_code, first.sensor_kind, first.sensor_unit) == (
        "plant-a",
        "pressure",
        "kPa",
    )
    assert (first.spoken_text, first.spoken_value, first.spoken_unit) == (
        "190 kPa",
        190.0,
        "kilopascal",
    )
    assert (first.value_in_sensor_unit, first.attribution, first.match_score) == (
        190.0,
        "named",
        100.0,
    )
    assert (first.tolerance_abs, first.tolerance_pct) == (None, 5.0)


def _cookbook(title: str) -> str:
    """The README's SQL cookbook query under the comment that starts with ``title``."""
    cookbook = README.split("## SQL cookbook", 1)[1].split("```sql\n", 1)[1].split("```", 1)[0]
    (query,) = [q for q in cookbook.split(";") if q.strip().startswith(f"-- {title}")]
    return query


def test_the_readme_s_queries_find_what_they_say(db: Engine) -> None:
    scene = _seed(db)
    _save(db, scene.job_id)
    # The demo facility and sensor the README names.
    with Session(db) as session, session.begin():
        session.get_one(Facility, scene.facility_id).code = "rotterdam-north"
    with db.connect() as conn:
        disagree = conn.execute(text(_cookbook("Spoken values that disagree"))).all()
        about = conn.execute(text(_cookbook("Everything said about sensor PT-201"))).all()
    assert [(r.sensor_code, r.spoken_text, r.reading_value) for r in disagree] == [
        ("TT-101", "92 degrees", 80.0)
    ]
    assert [(r.said_in, r.reading_value, _bool(r.agrees)) for r in about] == [
        ("PT-201 is at 190 kPa.", 188.0, True)
    ]


def test_a_reading_inside_the_tolerance_edge_agrees(db: Engine) -> None:
    scene = _seed(db)
    # TT-101 at exactly 2 °C off: agrees (the bound is inclusive).
    with Session(db) as session, session.begin():
        session.add(SensorReading(sensor_id=scene.sensors["TT-101"], ts=_at(6), value=90.0))
    _save(db, scene.job_id)
    (row,) = _view(db, "WHERE sensor_code = :code", code="TT-101")
    assert (row.reading_value, row.difference, _bool(row.agrees)) == (90.0, 2.0, True)


def test_a_run_again_replaces_the_mentions(db: Engine) -> None:
    scene = _seed(db)
    _save(db, scene.job_id)
    with db.begin() as conn:  # marks the first run's rows
        conn.execute(update(TranscriptMention).values(spoken_text="first run"))
    _save(db, scene.job_id)
    texts = [r.spoken_text for r in _view(db)]
    assert len(texts) == 6  # no duplicates
    assert "first run" not in texts  # none left over from the first run
    # The second run heard less: only what it heard is kept.
    _save(db, scene.job_id, replace(RESULT, segments=RESULT.segments[:1]))
    assert [r.sensor_code for r in _view(db)] == ["PT-201"]
    _save(db, scene.job_id, replace(RESULT, segments=()))
    assert _view(db) == []
    with Session(db) as session:
        assert session.scalar(select(func.count()).select_from(Transcript)) == 1


def test_a_deleted_sensor_leaves_its_mentions_unattributed(db: Engine) -> None:
    scene = _seed(db)
    _save(db, scene.job_id)
    with db.begin() as conn:
        conn.execute(delete(Sensor).where(Sensor.id == scene.sensors["TT-101"]))
    rows = _view(db)
    assert len(rows) == 6
    row = next(r for r in rows if r.spoken_text == "92 degrees")
    assert (row.sensor_id, row.sensor_code, row.sensor_unit, row.reading_value) == (
        None,
        None,
        None,
        None,
    )
    assert _bool(row.agrees) is None
    # How it was attributed, and the words that named the sensor, stay.
    assert (row.attribution, row.sensor_text, row.facility_code) == ("named", "TT-101", "plant-a")
    # A deleted facility (its sensors with it) leaves every mention, unattributed.
    with db.begin() as conn:
        conn.execute(delete(Facility).where(Facility.id == scene.facility_id))
    rows = _view(db)
    assert len(rows) == 6
    assert {(r.facility_id, r.sensor_id, r.agrees) for r in rows} == {(None, None, None)}


def test_audio_at_no_facility_keeps_its_readings_unattributed(db: Engine) -> None:
    job_id = create_job(db, RECORDED_AT, key="misc/note.wav")
    _save(db, job_id)
    rows = _view(db)
    assert [(r.spoken_value, r.spoken_unit) for r in rows] == [
        (190.0, "kilopascal"),
        (92.0, "degree_Celsius"),
        (45.0, "percent"),
        (21.0, "degree_Celsius"),
        (1000.0, "kilopascal"),
        (1.1, "megapascal"),
    ]
    for r in rows:
        assert (r.facility_id, r.facility_code, r.sensor_id, r.sensor_code) == (None,) * 4
        assert (r.value_in_sensor_unit, r.attribution, r.reading_value, r.agrees) == (None,) * 4
        assert (r.tolerance_abs, r.tolerance_pct) == (None, None)
        assert r.key == "misc/note.wav"


def test_the_job_step_writes_mentions_in_the_transcript_s_transaction(db: Engine) -> None:
    scene = _seed(db)
    settings = Settings(reading_tolerances="pressure=1, TEMPERATURE=3%")
    owner = f"{socket.gethostname()}/1/alice"
    lease = jobs.acquire(db, scene.job_id, owner, settings)
    assert lease is not None
    audio = DecodedAudio((np.zeros(SAMPLE_RATE, dtype=np.float32),), 16_000, 1, "wav", "pcm")
    fetched = Fetched(
        lease, TranscribeOptions.from_settings(settings), audio, settings.tolerance_by_kind
    )
    save(db, fetched, RESULT)
    rows = _view(db)
    assert [(r.sensor_code, r.tolerance_abs, r.tolerance_pct) for r in rows] == [
        ("PT-201", 1.0, None),
        ("TT-101", None, 3.0),
        ("HT-301", None, None),
        ("TT-102", None, 3.0),
        ("PT-202", 1.0, None),
        ("PT-202", 1.0, None),
    ]
    # A worker that lost its lease writes nothing, mentions included.
    stale = replace(fetched, lease=replace(lease, owner="elsewhere/1/bob"))
    with pytest.raises(LeaseLost):
        save(db, stale, replace(RESULT, segments=RESULT.segments[:1]))
    assert len(_view(db)) == 6


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("", {}),
        (
            "temperature=2,pressure=5%,humidity=5",
            {
                "temperature": ReadingTolerance(absolute=2.0),
                "pressure": ReadingTolerance(percent=5.0),
                "humidity": ReadingTolerance(absolute=5.0),
            },
        ),
        (" Flow Rate = 0.5 % , ", {"flow rate": ReadingTolerance(percent=0.5)}),
        ("pressure=0", {"pressure": ReadingTolerance(absolute=0.0)}),
    ],
)
def test_tolerances_parse(setting: str, expected: dict[str, ReadingTolerance]) -> None:
    assert parse_reading_tolerances(setting) == expected
    assert Settings(reading_tolerances=setting).tolerance_by_kind == expected


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("temperature", "'temperature' is not kind=number or kind=number%"),
        ("=2", "'=2' is not kind=number or kind=number%"),
        ("pressure=5%%", "is not kind=number or kind=number%"),
        ("pressure=five", "'pressure=five': the tolerance must be a number of 0 or more"),
        ("pressure=-1", "must be a number of 0 or more"),
        ("pressure=nan", "must be a number of 0 or more"),
        ("pressure=inf%", "must be a number of 0 or more"),
        ("pressure=1,Pressure=2%", "'pressure' is given twice"),
    ],
)
def test_bad_tolerances_are_refused_with_a_reason(setting: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_reading_tolerances(setting)
    assert message in str(info.value)
