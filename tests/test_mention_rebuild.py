"""`transcriber mentions rebuild` (the readings said in stored transcripts found again, after
sensors were added or renamed) and `transcriber export --format json`'s mentions."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from tests.support.databases import create_job
from tests.support.transcripts import whisper_segment
from transcriber import mention_rebuild
from transcriber.cli import main
from transcriber.config import get_settings, parse_reading_tolerances
from transcriber.errors import UnknownFacility
from transcriber.export import to_txt
from transcriber.mention_rebuild import RebuildResult, rebuild, transcripts_to_rebuild
from transcriber.results import Transcription
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
from transcriber.transcripts import load_transcription, save_mentions, save_transcription

RECORDED_AT = datetime(2026, 5, 4, 8, 30, tzinfo=UTC)
TOLERANCES = parse_reading_tolerances("temperature=2,pressure=5%")


RESULT = Transcription(
    language="en",
    language_probability=0.99,
    duration_s=30.0,
    segments=(
        whisper_segment("PT-205 is at 190 kPa.", 0.0),  # no such code until PT-201 is renamed
        whisper_segment("TT-101 reads 92 degrees.", 5.0),  # no such sensor until it is added
        whisper_segment("The steam header pressure is one point one megapascals.", 10.0),  # PT-202
        whisper_segment("Holding at 150 kPa.", 20.0),  # two pressure sensors: the recording's own
    ),
    model="tiny.en",
)


@dataclass
class Plant:
    facility_id: int
    sensors: dict[str, int]


def _plant(engine: Engine, code: str) -> Plant:
    """A facility with two pressure sensors and no temperature sensor."""
    with Session(engine) as session, session.begin():
        facility = Facility(code=code, name=code.title())
        session.add(facility)
        session.flush()
        rows = [
            Sensor(facility_id=facility.id, code=c, kind="pressure", unit="kPa", description=d)
            for c, d in (("PT-201", "Column head pressure"), ("PT-202", "Steam header pressure"))
        ]
        session.add_all(rows)
        session.flush()
        return Plant(facility.id, {row.code: row.id for row in rows})


def _job(engine: Engine, plant: Plant, recorded_at: datetime = RECORDED_AT) -> int:
    """A job at ``plant`` whose transcript (RESULT) is saved as a worker saves it."""
    job_id = create_job(
        engine, recorded_at, key=f"{plant.facility_id}/{recorded_at:%Y%m%dT%H%M%S}.wav"
    )
    with Session(engine) as session, session.begin():
        audio_id = session.get_one(TranscriptionJob, job_id).audio_object_id
        session.get_one(AudioObject, audio_id).facility_id = plant.facility_id
        save_transcription(session, job_id, RESULT, TOLERANCES)
    return job_id


def _rename_and_add(engine: Engine, plant: Plant) -> None:
    """What a new sensor file brings: PT-201 is PT-205 now, TT-101 is new."""
    with Session(engine) as session, session.begin():
        session.execute(
            update(Sensor).where(Sensor.id == plant.sensors["PT-201"]).values(code="PT-205")
        )
        tt = Sensor(facility_id=plant.facility_id, code="TT-101", kind="temperature", unit="°C")
        session.add(tt)
        session.flush()
        plant.sensors["TT-101"] = tt.id


def _own_sensor(engine: Engine, job_id: int, sensor_id: int) -> None:
    with Session(engine) as session, session.begin():
        audio_id = session.get_one(TranscriptionJob, job_id).audio_object_id
        session.get_one(AudioObject, audio_id).sensor_id = sensor_id


def _mentions(engine: Engine, job_id: int) -> list[dict[str, Any]]:
    """Job ``job_id``'s mentions by content: every column but the ids of the rows, with the
    index of the segment instead of its id (a job saved again has new segments)."""
    skip = {"id", "transcript_id", "segment_id"}
    columns = [c for c in TranscriptMention.__table__.c if c.name not in skip]
    with Session(engine) as session:
        rows = session.execute(
            select(TranscriptSegment.idx.label("segment_idx"), *columns)
            .join(TranscriptSegment, TranscriptSegment.id == TranscriptMention.segment_id)
            .join(Transcript, Transcript.id == TranscriptMention.transcript_id)
            .where(Transcript.job_id == job_id)
            .order_by(TranscriptMention.idx)
        )
        return [dict(row._mapping) for row in rows]


def _attributed(engine: Engine, job_id: int) -> list[tuple[str, str | None, str | None]]:
    with Session(engine) as session:
        codes = dict(session.execute(select(Sensor.id, Sensor.code)).all())
    return [
        (m["spoken_text"], codes.get(m["sensor_id"]), m["attribution"])
        for m in _mentions(engine, job_id)
    ]


BEFORE = [
    ("190 kPa", None, None),
    ("92 degrees", None, None),
    ("one point one megapascals", "PT-202", "named"),
    ("150 kPa", None, None),
]
AFTER = [
    ("190 kPa", "PT-205", "named"),
    ("92 degrees", "TT-101", "named"),
    ("one point one megapascals", "PT-202", "named"),
    ("150 kPa", "PT-202", "own_sensor"),
]


def test_a_rebuild_attributes_readings_to_sensors_added_or_renamed(db: Engine) -> None:
    plant = _plant(db, "plant-a")
    job_id = _job(db, plant)
    assert _attributed(db, job_id) == BEFORE
    _rename_and_add(db, plant)
    _own_sensor(db, job_id, plant.sensors["PT-202"])
    result = rebuild(db, transcripts_to_rebuild(db), TOLERANCES)
    assert result == RebuildResult(1, 4, 4, 1, 4)
    assert _attributed(db, job_id) == AFTER
    rebuilt = _mentions(db, job_id)
    # At the recording's time, with the tolerances given.
    assert [m["said_at"] for m in rebuilt] == [
        RECORDED_AT + timedelta(seconds=s) for s in (1.5, 6.0, 12.5, 21.0)
    ]
    assert [(m["tolerance_abs"], m["tolerance_pct"]) for m in rebuilt] == [
        (None, 5.0),
        (2.0, None),
        (None, 5.0),
        (None, 5.0),
    ]
    assert rebuilt[1]["value_in_sensor_unit"] == 92.0
    assert rebuilt[0]["facility_id"] == plant.facility_id
    # Exactly what the job path writes for the same transcript, sensors and tolerances.
    with Session(db) as session, session.begin():
        save_transcription(session, job_id, RESULT, TOLERANCES)
    assert _mentions(db, job_id) == rebuilt


def test_a_rebuild_twice_gives_the_same_rows(db: Engine) -> None:
    plant = _plant(db, "plant-a")
    job_id = _job(db, plant)
    _rename_and_add(db, plant)
    first = rebuild(db, transcripts_to_rebuild(db), TOLERANCES)
    rows = _mentions(db, job_id)
    second = rebuild(db, transcripts_to_rebuild(db), TOLERANCES)
    assert _mentions(db, job_id) == rows
    assert (first.mentions_after, first.attributed_after) == (4, 3)
    assert second == RebuildResult(1, 4, 4, 3, 3)


def test_the_facility_option_rebuilds_that_facility_s_transcripts_only(db: Engine) -> None:
    a, b = _plant(db, "plant-a"), _plant(db, "plant-b")
    job_a, job_b = _job(db, a), _job(db, b)
    _rename_and_add(db, a)
    _rename_and_add(db, b)
    ids = transcripts_to_rebuild(db, facility="plant-a")
    assert len(ids) == 1
    assert rebuild(db, ids, TOLERANCES).transcripts == 1
    assert [code for _, code, _ in _attributed(db, job_a)] == ["PT-205", "TT-101", "PT-202", None]
    assert _attributed(db, job_b) == BEFORE


def test_the_since_option_takes_audio_recorded_at_or_after_it(db: Engine) -> None:
    plant = _plant(db, "plant-a")
    older = _job(db, plant, RECORDED_AT)
    newer = _job(db, plant, RECORDED_AT + timedelta(days=1))
    _rename_and_add(db, plant)
    assert transcripts_to_rebuild(db, since=RECORDED_AT + timedelta(days=1, seconds=1)) == []
    ids = transcripts_to_rebuild(db, since=RECORDED_AT + timedelta(days=1))  # at: included
    rebuild(db, ids, TOLERANCES)
    assert _attributed(db, older) == BEFORE
    assert [code for _, code, _ in _attributed(db, newer)] == ["PT-205", "TT-101", "PT-202", None]
    # Both options together: each narrows.
    assert transcripts_to_rebuild(db, facility="plant-a", since=RECORDED_AT) == sorted(
        transcripts_to_rebuild(db)
    )


def test_an_unknown_facility_is_refused_with_the_codes_there_are(db: Engine) -> None:
    with pytest.raises(UnknownFacility, match="there are no facilities yet"):
        transcripts_to_rebuild(db, facility="plant-a")
    _plant(db, "plant-b")
    _plant(db, "plant-a")
    with pytest.raises(UnknownFacility) as info:
        transcripts_to_rebuild(db, facility="plant-c")
    assert str(info.value) == "no facility has the code 'plant-c' (known: plant-a, plant-b)"


def test_a_failure_leaves_each_transcript_as_it_was_or_rebuilt_whole(
    db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    plant = _plant(db, "plant-a")
    first, second = _job(db, plant), _job(db, plant, RECORDED_AT + timedelta(hours=1))
    _rename_and_add(db, plant)
    calls = 0

    def fail_on_the_second(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("killed mid-rebuild")
        return save_mentions(*args, **kwargs)

    monkeypatch.setattr(mention_rebuild, "save_mentions", fail_on_the_second)
    with pytest.raises(RuntimeError, match="killed mid-rebuild"):
        rebuild(db, transcripts_to_rebuild(db), TOLERANCES)
    assert [code for _, code, _ in _attributed(db, first)] == ["PT-205", "TT-101", "PT-202", None]
    # Its mentions were deleted in the transaction that failed: they are all still there.
    assert _attributed(db, second) == BEFORE


def test_a_transcript_gone_since_it_was_listed_is_skipped(db: Engine) -> None:
    plant = _plant(db, "plant-a")
    job_id = _job(db, plant)
    (transcript_id,) = transcripts_to_rebuild(db)
    assert rebuild(db, [transcript_id + 1000], TOLERANCES) == RebuildResult()
    assert _attributed(db, job_id) == BEFORE


# --- the commands -----------------------------------------------------------------------


def _cli(url: str, *args: str, tolerances: str | None = None) -> Result:
    env = {"TRANSCRIBER_DATABASE_URL": url}
    if tolerances is not None:
        env["TRANSCRIBER_READING_TOLERANCES"] = tolerances
    get_settings.cache_clear()  # each command reads its environment, as in its own process
    return CliRunner().invoke(main, list(args), env=env)


def test_the_command_rebuilds_and_says_what_changed(db: Engine, migrated_db_url: str) -> None:
    a, b = _plant(db, "plant-a"), _plant(db, "plant-b")
    job_a, job_b = _job(db, a), _job(db, b, RECORDED_AT + timedelta(days=2))
    _rename_and_add(db, a)
    _rename_and_add(db, b)
    done = _cli(migrated_db_url, "mentions", "rebuild", "--facility", "plant-a")
    assert done.exit_code == 0, done.output
    assert done.stdout == ""
    assert (
        "rebuilt the mentions of 1 transcript: 4 before (1 attributed), 4 after (3 attributed)"
        in done.stderr
    )
    assert _attributed(db, job_b) == BEFORE
    done = _cli(
        migrated_db_url, "mentions", "rebuild", "--since", "2026-05-05", tolerances="temperature=3"
    )
    assert done.exit_code == 0, done.output
    assert "rebuilt the mentions of 1 transcript: 4 before (1 attributed)" in done.stderr
    assert [code for _, code, _ in _attributed(db, job_b)] == ["PT-205", "TT-101", "PT-202", None]
    # The tolerances in force now (TRANSCRIBER_READING_TOLERANCES): 3 °C, none for pressure.
    assert [(m["tolerance_abs"], m["tolerance_pct"]) for m in _mentions(db, job_b)] == [
        (None, None),
        (3.0, None),
        (None, None),
        (None, None),
    ]
    rows = _mentions(db, job_a)
    done = _cli(migrated_db_url, "mentions", "rebuild")
    assert done.exit_code == 0, done.output
    assert "of 2 transcripts: 8 before (6 attributed), 8 after (6 attributed)" in done.stderr
    assert _mentions(db, job_a) == rows


def test_the_command_refuses_a_bad_facility_or_date(db: Engine, migrated_db_url: str) -> None:
    _plant(db, "plant-a")
    done = _cli(migrated_db_url, "mentions", "rebuild", "--facility", "plant-x")
    assert done.exit_code == 1
    assert "Error: no facility has the code 'plant-x' (known: plant-a)" in done.stderr
    assert "Traceback" not in done.output
    done = _cli(migrated_db_url, "mentions", "rebuild", "--since", "last tuesday")
    assert done.exit_code == 2
    assert "'last tuesday' is not an ISO 8601 date" in done.stderr


def test_json_export_lists_the_readings_said(db: Engine, migrated_db_url: str) -> None:
    plant = _plant(db, "plant-a")
    job_id = _job(db, plant)
    _rename_and_add(db, plant)
    rebuild(db, transcripts_to_rebuild(db), TOLERANCES)
    with Session(db) as session, session.begin():
        session.add_all(
            [
                # PT-205 (was PT-201): 188 a minute after "190 kPa", within 5 %.
                SensorReading(
                    sensor_id=plant.sensors["PT-201"],
                    ts=RECORDED_AT + timedelta(seconds=61.5),
                    value=188.0,
                ),
                # TT-101: 80, 12 °C off "92 degrees" with 2 allowed.
                SensorReading(sensor_id=plant.sensors["TT-101"], ts=RECORDED_AT, value=80.0),
            ]
        )
    done = _cli(migrated_db_url, "export", str(job_id), "--format", "json")
    assert done.exit_code == 0, done.output
    data = json.loads(done.stdout)
    assert data["text"] == RESULT.text
    first, second, third, fourth = data["mentions"]
    assert first == {
        "start": 1.5,
        "end": 2.4,
        "said_at": "2026-05-04T08:30:01.500000+00:00",
        "spoken_text": "190 kPa",
        "spoken_value": 190.0,
        "spoken_unit": "kilopascal",
        "sensor_code": "PT-205",
        "sensor_unit": "kPa",
        "value_in_sensor_unit": 190.0,
        "attribution": "named",
        "sensor_text": "PT-205",
        "match_score": 100.0,
        "probability": pytest.approx(0.86),
        "reading_ts": "2026-05-04T08:31:01.500000+00:00",
        "reading_value": 188.0,
        "difference": 2.0,
        "agrees": True,
    }
    assert (second["sensor_code"], second["reading_value"], second["agrees"]) == (
        "TT-101",
        80.0,
        False,
    )
    assert (second["said_at"], second["difference"]) == ("2026-05-04T08:30:06+00:00", 12.0)
    # No reading to compare with: the reading's fields are null.
    assert (third["sensor_code"], third["value_in_sensor_unit"]) == ("PT-202", pytest.approx(1100))
    assert (third["reading_ts"], third["reading_value"], third["agrees"]) == (None, None, None)
    assert (fourth["sensor_code"], fourth["attribution"]) == (None, None)


def test_other_export_formats_are_unchanged_and_no_mentions_is_an_empty_list(
    db: Engine, migrated_db_url: str
) -> None:
    plant = _plant(db, "plant-a")
    job_id = _job(db, plant)
    with Session(db) as session:
        stored = load_transcription(session, job_id)
    assert stored is not None
    done = _cli(migrated_db_url, "export", str(job_id), "--format", "txt")
    assert done.exit_code == 0, done.output
    assert done.stdout == to_txt(stored)
    quiet = create_job(db, RECORDED_AT, key="misc/quiet.wav")
    with Session(db) as session, session.begin():
        save_transcription(session, quiet, replace(RESULT, segments=()))
    done = _cli(migrated_db_url, "export", str(quiet), "--format", "json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["mentions"] == []
