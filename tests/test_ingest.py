"""transcriber.ingest and transcriber.placement: events, placement, registration and scan,
against a real moto server and real databases (SQLite and PostgreSQL). The watcher's tests are
in tests/test_watch.py."""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, insert, inspect, select, update
from sqlalchemy.orm import Session

from tests.support.ingest import Recorder, count, jobs_by_key, s3_record, upload
from transcriber import placement
from transcriber.config import Settings
from transcriber.errors import BadEvent, StorageAccessDenied
from transcriber.ingest.events import ObjectEvent, parse_event_message
from transcriber.ingest.registration import register
from transcriber.ingest.scan import scan
from transcriber.ingest.watch import Watcher
from transcriber.placement import clean_text, key_fields, place, place_downloaded, wanted
from transcriber.schema import AudioObject, Facility, Sensor, TranscriptionJob
from transcriber.storage import (
    ListedObject,
    ObjectInfo,
    download,
    head,
    s3_client,
    sqs_client,
)

LAST_MODIFIED = datetime(2026, 3, 14, 12, 0, 0, tzinfo=UTC)


def info(
    key: str = "P1/PT-1/20260314T101500Z.wav",
    *,
    etag: str = "e1",
    version_id: str = "",
    last_modified: datetime = LAST_MODIFIED,
    metadata: dict[str, str] | None = None,
    bucket: str = "audio-bucket",
) -> ObjectInfo:
    return ObjectInfo(
        bucket=bucket,
        key=key,
        version_id=version_id,
        etag=etag,
        size_bytes=1234,
        content_type="audio/wav",
        last_modified=last_modified,
        metadata=metadata or {},
    )


def do_register(
    engine: Engine, objects: Sequence[tuple[ObjectInfo, str | None]], settings: Settings
) -> list[int]:
    with Session(engine) as session, session.begin():
        return register(session, objects, settings)


# --- Events -------------------------------------------------------------------------------


def test_a_test_event_gives_no_events() -> None:
    body = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "audio-bucket"}
    assert parse_event_message(json.dumps(body)) == []


def test_object_created_records_are_parsed_and_keys_decoded() -> None:
    body = {
        "Records": [
            s3_record(
                "plant+1/%C3%BC+%2B+a%2Fb/..%2Fx.wav",
                versionId="v-42",
                sequencer="0055AED6DCD90281E5",
            ),
            s3_record("removed.wav", event_name="ObjectRemoved:Delete"),
            s3_record("copy.wav", event_name="ObjectCreated:Copy", eTag='"quoted"'),
        ]
    }
    events = parse_event_message(json.dumps(body))
    assert events == [
        ObjectEvent(
            bucket="audio-bucket",
            key="plant 1/ü + a/b/../x.wav",
            version_id="v-42",
            etag="0123abcd",
            size=1234,
            sequencer="0055AED6DCD90281E5",
            event_time=datetime(2026, 3, 14, 10, 15, 2, 123000, tzinfo=UTC),
        ),
        ObjectEvent(
            bucket="audio-bucket",
            key="copy.wav",
            version_id="",
            etag="quoted",
            size=1234,
            sequencer=None,
            event_time=datetime(2026, 3, 14, 10, 15, 2, 123000, tzinfo=UTC),
        ),
    ]


def test_an_sns_envelope_is_unwrapped() -> None:
    inner = json.dumps({"Records": [s3_record("a%20b.wav")]})
    envelope = {"Type": "Notification", "MessageId": "m", "TopicArn": "arn", "Message": inner}
    [event] = parse_event_message(json.dumps(envelope))
    assert event.key == "a b.wav"


def test_other_json_gives_no_events() -> None:
    assert parse_event_message(json.dumps({"detail-type": "something else"})) == []


@pytest.mark.parametrize(
    "body",
    [
        "",
        "not json",
        "{",
        "[1, 2]",
        '"a string"',
        json.dumps({"Records": "nope"}),
        json.dumps({"Records": [42]}),
        json.dumps({"Records": [{"eventName": "ObjectCreated:Put"}]}),
        json.dumps({"Records": [s3_record(["not", "a", "string"])]}),  # type: ignore[arg-type]
        json.dumps({"Type": "Notification", "Message": "not json"}),
        json.dumps({"Type": "Notification", "Message": {"Records": []}}),
        "[" * 100_000,
    ],
)
def test_malformed_messages_raise_bad_event(body: str) -> None:
    with pytest.raises(BadEvent):
        parse_event_message(body)


def test_wanted_keys() -> None:
    settings = Settings(s3_prefix="incoming/")
    assert wanted("incoming/P1/x.wav", settings)
    assert wanted("incoming/P1/X.WAV", settings)
    assert wanted("incoming/P1/x.Opus", settings)
    assert not wanted("elsewhere/x.wav", settings)
    assert not wanted("incoming/notes.txt", settings)
    assert not wanted("incoming/folder.wav/", settings)
    assert not wanted("incoming/nul\x00.wav", settings)
    assert wanted("incoming/any.thing", Settings(s3_prefix="incoming/", s3_suffixes=""))


# --- Placement ----------------------------------------------------------------------------


def test_metadata_wins_over_the_key() -> None:
    placement = place(
        "P1/PT-1/20260314T101500Z.wav",
        {"facility": "P2", "sensor": "TT-9", "recorded-at": "2026-03-15T08:00:00+01:00"},
        LAST_MODIFIED,
        Settings(),
    )
    assert placement.facility_code == "P2"
    assert placement.sensor_code == "TT-9"
    assert placement.recorded_at == datetime(2026, 3, 15, 7, 0, tzinfo=UTC)
    assert placement.source == "metadata"


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("20260314T101500Z", datetime(2026, 3, 14, 10, 15, tzinfo=UTC)),
        ("20260314T101500+0100", datetime(2026, 3, 14, 9, 15, tzinfo=UTC)),
        ("2026-03-14T10:15:00", datetime(2026, 3, 14, 10, 15, tzinfo=UTC)),
        ("2026-03-14T10:15:00.250-02:00", datetime(2026, 3, 14, 12, 15, 0, 250000, tzinfo=UTC)),
        ("2026-03-14T10:15:00Z", datetime(2026, 3, 14, 10, 15, tzinfo=UTC)),
    ],
)
def test_the_key_pattern_gives_place_and_time(stamp: str, expected: datetime) -> None:
    placement = place(f"P1/PT-1/{stamp}.wav", {}, LAST_MODIFIED, Settings())
    assert (placement.facility_code, placement.sensor_code) == ("P1", "PT-1")
    assert placement.recorded_at == expected
    assert placement.source == "key"


def test_a_bad_recorded_at_falls_through_to_the_key_then_last_modified() -> None:
    settings = Settings()
    from_key = place(
        "P1/PT-1/20260314T101500Z.wav", {"recorded-at": "yesterday"}, LAST_MODIFIED, settings
    )
    assert from_key.source == "key"
    assert from_key.recorded_at == datetime(2026, 3, 14, 10, 15, tzinfo=UTC)
    fallback = place(
        "P1/PT-1/voice-note.wav", {"recorded-at": "2026-13-45"}, LAST_MODIFIED, settings
    )
    assert fallback.source == "last_modified"
    assert fallback.recorded_at == LAST_MODIFIED
    assert (fallback.facility_code, fallback.sensor_code) == ("P1", "PT-1")
    unmatched = place("just-a-file.wav", {}, LAST_MODIFIED, settings)
    assert unmatched == type(unmatched)(None, None, LAST_MODIFIED, "last_modified")


@pytest.mark.parametrize(
    "stamp",
    [
        # At datetime.max a segment's offset cannot be added: the job used to fail "internal".
        "9999-12-31T23:59:59Z",
        "3000-01-01T00:00:00Z",
        "0001-01-01T00:00:00Z",
        "1899-12-31T23:59:59Z",
    ],
)
def test_a_recorded_at_outside_1900_to_2999_is_ignored_like_an_invalid_one(stamp: str) -> None:
    from_metadata = place(
        "P1/PT-1/20260314T101500Z.wav", {"recorded-at": stamp}, LAST_MODIFIED, Settings()
    )
    assert from_metadata.source == "key"
    assert from_metadata.recorded_at == datetime(2026, 3, 14, 10, 15, tzinfo=UTC)
    from_key = place(f"P1/PT-1/{stamp}.wav", {}, LAST_MODIFIED, Settings())
    assert (from_key.source, from_key.recorded_at) == ("last_modified", LAST_MODIFIED)


def test_recorded_at_at_the_edges_of_the_accepted_years_is_kept() -> None:
    for stamp, expected in [
        ("1900-01-01T00:00:00Z", datetime(1900, 1, 1, tzinfo=UTC)),
        ("2999-12-31T23:59:59Z", datetime(2999, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ]:
        placement = place("x.wav", {"recorded-at": stamp}, LAST_MODIFIED, Settings())
        assert (placement.source, placement.recorded_at) == ("metadata", expected)


def test_a_custom_pattern_after_the_prefix() -> None:
    settings = Settings(s3_prefix="in/", key_pattern="{facility}/{name}_{recorded_at}.{ext}")
    placement = place("in/P9/radio_2026-03-14T10:15:00Z.m4a", {}, LAST_MODIFIED, settings)
    assert placement.facility_code == "P9"
    assert placement.sensor_code is None
    assert placement.recorded_at == datetime(2026, 3, 14, 10, 15, tzinfo=UTC)


def test_a_crafted_key_cannot_stall_the_pattern_match() -> None:
    # Four fields in one segment: a backtracking regex needs minutes for this key.
    settings = Settings(key_pattern="{facility}_{sensor}_{name}_{recorded_at}.{ext}")
    started = time.perf_counter()
    assert place("_" * 1020, {}, LAST_MODIFIED, settings).source == "last_modified"
    assert time.perf_counter() - started < 0.5
    placement = place("P1_PT-1_radio_20260314T101500Z.wav", {}, LAST_MODIFIED, settings)
    assert (placement.facility_code, placement.sensor_code) == ("P1", "PT-1")
    assert placement.source == "key"
    # Two fields in a segment go to a regex: at worst the segment's length squared.
    settings = Settings(key_pattern="{facility}/{recorded_at}.{ext}x")
    started = time.perf_counter()
    assert place("P/" + "." * 1020, {}, LAST_MODIFIED, settings).source == "last_modified"
    assert time.perf_counter() - started < 0.5


def test_segment_by_segment_matching_agrees_with_the_whole_key_table() -> None:
    # key_fields matches segment by segment (a regex where a segment has at most two
    # fields); placement._match over the whole key is the reference it must agree with.
    rng = random.Random(7)
    fields = ["{facility}", "{sensor}", "{recorded_at}", "{ext}", "{name}"]
    for _ in range(300):
        pattern = "".join(rng.choice([*fields, "/", ".", "_", "-", "a"]) for _ in range(6))
        settings = Settings(key_pattern=pattern)
        for _ in range(20):
            # Mostly the pattern filled in with values that hold its literals (ambiguous
            # splits), sometimes anything.
            key = re.sub(
                r"{[a-z_]+}",
                lambda _: "".join(rng.choice("ab._-") for _ in range(rng.randint(1, 4))),
                pattern,
            )
            if rng.random() < 0.2:
                key = "".join(rng.choice("ab/._-") for _ in range(rng.randint(1, 14)))
            expected = placement._match(placement._tokens(pattern), key.lstrip("/"))
            assert key_fields(key, settings) == expected, (pattern, key)


def test_codes_are_cleaned() -> None:
    placement = place(
        "x.wav", {"facility": "  P\x001\u202e\n ", "sensor": "S" * 500}, LAST_MODIFIED, Settings()
    )
    assert placement.facility_code == "P1"
    assert placement.sensor_code == "S" * 64
    assert clean_text("a\ud800b\x7f", 10) == "a?b"


# --- Registration -------------------------------------------------------------------------


@pytest.mark.fault("P1")
def test_registering_the_same_version_is_idempotent(db: Engine) -> None:
    settings = Settings()
    first = do_register(db, [(info(), None)], settings)
    assert len(first) == 1
    assert do_register(db, [(info(), None)], settings) == []
    assert do_register(db, [(info(), None), (info(), None)], settings) == []
    assert count(db, AudioObject) == 1
    assert jobs_by_key(db) == [("P1/PT-1/20260314T101500Z.wav", "e1", "queued", None)]


@pytest.mark.fault("P1")
def test_a_new_version_gets_a_job_and_supersedes_the_queued_one(db: Engine) -> None:
    settings = Settings()
    do_register(db, [(info(etag="e1"), None)], settings)
    later = LAST_MODIFIED + timedelta(seconds=5)
    [job_id] = do_register(db, [(info(etag="e2", last_modified=later), None)], settings)
    assert [row[1:] for row in jobs_by_key(db)] == [
        ("e1", "superseded", "superseded"),
        ("e2", "queued", None),
    ]
    with Session(db) as session:
        old = session.scalars(select(TranscriptionJob).order_by(TranscriptionJob.id)).first()
        assert old is not None
        assert old.finished_at is not None
        assert session.get_one(TranscriptionJob, job_id).status == "queued"


@pytest.mark.fault("P1")
def test_a_late_event_for_an_older_version_is_not_queued(db: Engine) -> None:
    settings = Settings()
    do_register(db, [(info(version_id="v2", etag="e2"), "0100")], settings)
    # An older sequencer, shorter: compared after padding ("00FF" < "0100").
    assert do_register(db, [(info(version_id="v1", etag="e1"), "FF")], settings) == []
    assert [row[1:] for row in jobs_by_key(db)] == [
        ("e2", "queued", None),
        ("e1", "superseded", "superseded"),
    ]


def test_without_sequencers_last_modified_orders_versions(db: Engine) -> None:
    settings = Settings()
    do_register(db, [(info(etag="new"), None)], settings)
    older = LAST_MODIFIED - timedelta(minutes=1)
    assert do_register(db, [(info(etag="old", last_modified=older), None)], settings) == []
    assert [row[1:3] for row in jobs_by_key(db)] == [("new", "queued"), ("old", "superseded")]


def test_a_running_job_of_an_older_version_is_left_alone(db: Engine) -> None:
    settings = Settings()
    [job_id] = do_register(db, [(info(etag="e1"), None)], settings)
    with Session(db) as session, session.begin():
        session.execute(
            update(TranscriptionJob).where(TranscriptionJob.id == job_id).values(status="running")
        )
    later = LAST_MODIFIED + timedelta(seconds=1)
    assert len(do_register(db, [(info(etag="e2", last_modified=later), None)], settings)) == 1
    assert [row[1:3] for row in jobs_by_key(db)] == [("e1", "running"), ("e2", "queued")]


def _final_jobs(engine: Engine) -> list[tuple[str, str, str, str | None, str | None]]:
    with Session(engine) as session:
        rows = session.execute(
            select(
                AudioObject.key,
                AudioObject.etag,
                TranscriptionJob.status,
                TranscriptionJob.error_category,
                TranscriptionJob.error_message,
            )
            .join(AudioObject, AudioObject.id == TranscriptionJob.audio_object_id)
            .order_by(TranscriptionJob.id)
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


def _empty(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(delete(TranscriptionJob))
        conn.execute(delete(AudioObject))


@pytest.mark.fault("P1")
def test_one_batch_ends_as_registering_one_by_one(db: Engine) -> None:
    settings = Settings()
    t = LAST_MODIFIED
    earlier = [(info("a.wav", etag="a0"), None), (info("c.wav", etag="c2", version_id="v2"), "20")]
    batch = [
        (info("a.wav", etag="a1", last_modified=t + timedelta(seconds=1)), None),
        (info("b.wav", etag="b1"), None),
        (info("a.wav", etag="a2", last_modified=t + timedelta(seconds=2)), None),
        (info("b.wav", etag="b1"), "ignored: the same version again"),
        (info("a.wav", etag="a-old", last_modified=t - timedelta(seconds=9)), None),  # late
        (info("c.wav", etag="c1", version_id="v1"), "10"),  # an older sequencer: late
        (info("c.wav", etag="c3", version_id="v3"), "30"),
        (info("b.wav", etag="b2", last_modified=t + timedelta(seconds=1)), None),
        (info("a.wav", etag="a3", last_modified=t + timedelta(seconds=3)), None),
    ]
    do_register(db, earlier, settings)
    one_by_one = [do_register(db, [obj], settings) for obj in batch]
    expected = _final_jobs(db)
    still_queued = [i for ids in one_by_one for i in ids if i in _queued_ids(db)]
    _empty(db)
    do_register(db, earlier, settings)
    queued = do_register(db, batch, settings)
    assert _final_jobs(db) == expected
    assert [row[:3] for row in expected if row[2] == "queued"] == [
        ("c.wav", "c3", "queued"),
        ("b.wav", "b2", "queued"),
        ("a.wav", "a3", "queued"),
    ]
    # One by one, a job superseded later in the same call was already handed out; a batch
    # hands out only the jobs still queued at its end.
    assert len(queued) == len(still_queued) == 3
    assert queued == sorted(_queued_ids(db))


def _queued_ids(engine: Engine) -> list[int]:
    with Session(engine) as session:
        return list(
            session.scalars(select(TranscriptionJob.id).where(TranscriptionJob.status == "queued"))
        )


def test_a_batch_larger_than_one_statement(db: Engine) -> None:
    settings = Settings()
    objects = [(info(f"P1/PT-1/{i}.wav", etag=f"e{i}"), None) for i in range(1234)]
    queued = do_register(db, objects, settings)
    assert len(set(queued)) == 1234
    with Session(db) as session:
        order = session.scalars(
            select(AudioObject.key)
            .join(TranscriptionJob, TranscriptionJob.audio_object_id == AudioObject.id)
            .where(TranscriptionJob.id.in_(queued))
            .order_by(TranscriptionJob.id)
        ).all()
    assert order == [obj.key for obj, _ in objects]  # jobs in the order of the objects
    with Session(db) as session:
        # Ids follow the order of arrival too: latest_transcripts counts the highest id of
        # a key as its newest version.
        by_id = session.scalars(select(AudioObject.key).order_by(AudioObject.id)).all()
    assert by_id == order
    assert do_register(db, objects, settings) == []
    assert count(db, AudioObject) == count(db, TranscriptionJob) == 1234


def test_unknown_codes_are_kept_in_metadata(db: Engine) -> None:
    do_register(db, [(info(metadata={"operator": "Ann"}), None)], Settings())
    with Session(db) as session:
        audio = session.scalars(select(AudioObject)).one()
        assert audio.facility_id is None
        assert audio.sensor_id is None
        assert audio.recorded_at == datetime(2026, 3, 14, 10, 15, tzinfo=UTC)
        assert audio.recorded_at_source == "key"
        assert audio.meta == {
            "facility": "P1",
            "sensor": "PT-1",
            "last_modified": "2026-03-14T12:00:00+00:00",
            "s3_metadata": {"operator": "Ann"},
        }
    assert count(db, Facility) == 0


def test_known_codes_are_linked(db: Engine) -> None:
    with Session(db) as session, session.begin():
        facility_id = session.execute(
            insert(Facility).values(code="P1", name="Plant one").returning(Facility.id)
        ).scalar_one()
        sensor_id = session.execute(
            insert(Sensor)
            .values(facility_id=facility_id, code="PT-1", kind="pressure", unit="bar")
            .returning(Sensor.id)
        ).scalar_one()
    do_register(db, [(info(), None)], Settings())
    with Session(db) as session:
        audio = session.scalars(select(AudioObject)).one()
        assert (audio.facility_id, audio.sensor_id) == (facility_id, sensor_id)


def test_a_batch_links_known_codes_and_leaves_unknown_ones(db: Engine) -> None:
    with Session(db) as session, session.begin():
        p1, p2 = (
            session.execute(
                insert(Facility).values(code=code, name=code).returning(Facility.id)
            ).scalar_one()
            for code in ("P1", "P2")
        )
        pt1 = session.execute(
            insert(Sensor)
            .values(facility_id=p1, code="PT-1", kind="pressure", unit="bar")
            .returning(Sensor.id)
        ).scalar_one()
    keys = ["P1/PT-1/a.wav", "P2/PT-1/b.wav", "P9/PT-1/c.wav", "P1/XX-9/d.wav", "P1/PT-1/e.wav"]
    do_register(db, [(info(key, etag=key), None) for key in keys], Settings())
    with Session(db) as session:
        rows = session.execute(
            select(AudioObject.key, AudioObject.facility_id, AudioObject.sensor_id).order_by(
                AudioObject.id
            )
        ).all()
    # PT-1 exists at P1 only; P9 is no facility at all.
    assert [tuple(row) for row in rows] == [
        ("P1/PT-1/a.wav", p1, pt1),
        ("P2/PT-1/b.wav", p2, None),
        ("P9/PT-1/c.wav", None, None),
        ("P1/XX-9/d.wav", p1, None),
        ("P1/PT-1/e.wav", p1, pt1),
    ]


def test_auto_register_sensors_creates_valid_codes_only(db: Engine) -> None:
    settings = Settings(auto_register_sensors=True)
    do_register(
        db,
        [
            (info("P7/PT-3/20260314T101500Z.wav"), None),
            (info("P7/TT-1/20260314T101500Z.wav"), None),
            (info("bad code/PT-1/20260314T101500Z.wav"), None),
        ],
        settings,
    )
    with Session(db) as session:
        [facility] = session.scalars(select(Facility)).all()
        assert (facility.code, facility.name, facility.timezone) == ("P7", "P7", "UTC")
        sensors = session.scalars(select(Sensor).order_by(Sensor.code)).all()
        assert [(s.code, s.kind, s.unit, s.facility_id) for s in sensors] == [
            ("PT-3", "unknown", "", facility.id),
            ("TT-1", "unknown", "", facility.id),
        ]
        linked = session.execute(
            select(AudioObject.key, AudioObject.facility_id, AudioObject.sensor_id).order_by(
                AudioObject.id
            )
        ).all()
        assert [(k.split("/")[0], f is not None, s is not None) for k, f, s in linked] == [
            ("P7", True, True),
            ("P7", True, True),
            ("bad code", False, False),
        ]


@pytest.mark.fault("P5", "P6")
def test_hostile_metadata_is_stored_safely(db: Engine, moto_bucket: Settings) -> None:
    sql = "'); DROP TABLE audio_objects; --"
    upload(
        moto_bucket,
        "P1/PT-1/20260314T101500Z.wav",
        metadata={
            "facility": sql,
            "sensor": "\x01\x02" + "S" * 100,
            "note": (sql * 80)[:2000],
            "bad": "=?UTF-8?B?//79?=",  # bytes that are not UTF-8, RFC 2047-wrapped
            "recorded-at": "2026-03-14T10:15:00Z" + "9" * 2000,
        },
    )
    real = head(s3_client(moto_bucket), moto_bucket.s3_bucket, "P1/PT-1/20260314T101500Z.wav")
    assert real is not None
    # And what no HTTP header could carry, straight to register.
    direct = info(
        "P2/S1/x.wav",
        etag="e2",
        metadata={"facility": "\x00", "nul": "a\x00b", "surrogate": "\ud800x", "\x00": "key"},
    )
    settings = moto_bucket
    do_register(db, [(real, None), (direct, None)], settings)
    assert set(inspect(db).get_table_names()) >= {"audio_objects", "transcription_jobs"}
    with Session(db) as session:
        rows = session.scalars(select(AudioObject).order_by(AudioObject.id)).all()
    stored = rows[0].meta
    assert stored["facility"] == sql[:64]
    assert stored["sensor"] == "S" * 64
    assert len(stored["s3_metadata"]["note"]) == 1024
    assert stored["s3_metadata"]["bad"] == "\ufffd\ufffd\ufffd"
    assert rows[0].recorded_at_source == "key"
    assert rows[0].facility_id is None
    assert rows[1].meta["facility"] == "P2"  # NUL-only metadata falls through to the key
    assert rows[1].meta["s3_metadata"] == {"facility": "", "nul": "ab", "surrogate": "?x"}
    assert count(db, TranscriptionJob) == 2


# --- Scan ---------------------------------------------------------------------------------


def test_scan_finds_what_the_events_missed_once(db: Engine, moto_bucket: Settings) -> None:
    keys = ["P1/PT-1/20260314T101500Z.wav", "P1/PT-2/20260314T101600Z.flac", "P2/x y/ü.mp3"]
    for key in keys:
        upload(moto_bucket, key)
    upload(moto_bucket, "P1/readme.txt")
    upload(moto_bucket, "P1/folder/")
    sqs_client(moto_bucket).purge_queue(QueueUrl=moto_bucket.sqs_queue_url)  # events lost
    publish = Recorder(db)
    progress: list[int] = []
    s3 = s3_client(moto_bucket)
    result = scan(s3, db, moto_bucket, publish, progress=progress.append)
    assert (result.listed, result.registered, result.skipped) == (5, 3, 2)
    assert sum(progress) == 5
    assert len(publish.calls) == 1
    assert len(publish.ids) == 3
    assert sorted(k for k, *_ in jobs_by_key(db)) == sorted(keys)
    again = scan(s3, db, moto_bucket, publish)
    assert (again.listed, again.registered, again.skipped) == (5, 0, 5)
    assert len(publish.calls) == 1
    # An overwrite is a new version: the next scan registers it.
    upload(moto_bucket, keys[0], b"RIFF, but longer")
    assert scan(s3, db, moto_bucket, publish).registered == 1
    assert [s for k, _, s, _ in jobs_by_key(db) if k == keys[0]] == ["superseded", "queued"]


def test_scan_takes_version_ids_from_the_listing_and_the_download_places_by_metadata(
    db: Engine, versioned_bucket: Settings, tmp_path: Path
) -> None:
    key = "P1/PT-1/20260314T101500Z.wav"
    upload(versioned_bucket, key, b"RIFF old")
    metadata = {"facility": "P9", "recorded-at": "2026-03-15T08:00:00Z"}
    upload(versioned_bucket, key, b"RIFF newer", metadata=metadata)
    s3 = s3_client(versioned_bucket)
    current = head(s3, versioned_bucket.s3_bucket, key)
    assert current is not None
    with Session(db) as session, session.begin():
        session.add(Facility(code="P9", name="Plant 9", timezone="UTC"))
    publish = Recorder(db)
    assert scan(s3, db, versioned_bucket, publish).registered == 1
    with Session(db) as session:
        audio = session.scalars(select(AudioObject)).one()
        session.expunge(audio)
    # The listing's facts: the current version, placed by its key, its metadata not read yet.
    assert (audio.version_id, audio.etag) == (current.version_id, current.etag)
    assert audio.meta["facility"] == "P1"
    assert audio.meta["s3_metadata"] is None
    assert (audio.facility_id, audio.recorded_at_source) == (None, "key")
    # The same version announced by an event afterwards is not a second object.
    assert Watcher(versioned_bucket, db, publish, wait_time_seconds=1).run_once() == 0
    assert count(db, AudioObject) == 1

    downloaded = download(s3, audio, tmp_path, max_bytes=1000)
    with Session(db) as session, session.begin():
        assert place_downloaded(session, audio, downloaded, versioned_bucket)
    with Session(db) as session:
        placed = session.scalars(select(AudioObject)).one()
        facility = session.scalars(select(Facility).where(Facility.code == "P9")).one()
        assert placed.facility_id == facility.id
        assert placed.meta["facility"] == "P9"
        assert placed.meta["s3_metadata"] == metadata
        assert placed.meta["last_modified"] == audio.meta["last_modified"]
        assert placed.recorded_at_source == "metadata"
        assert placed.recorded_at.replace(tzinfo=UTC) == datetime(2026, 3, 15, 8, tzinfo=UTC)
        assert placed.content_type == current.content_type
        session.expunge(placed)
    # Placed once: a second download (a retry) changes nothing.
    with Session(db) as session, session.begin():
        assert not place_downloaded(session, placed, downloaded, versioned_bucket)


def test_scan_without_leave_to_list_versions_reads_each_object(
    db: Engine, moto_bucket: Settings, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    def denied(*args: object) -> Iterator[ListedObject]:
        raise StorageAccessDenied("listing the versions of s3://bucket/: AccessDenied")
        yield

    monkeypatch.setattr("transcriber.ingest.scan.iter_current_versions", denied)
    upload(moto_bucket, "P1/PT-1/20260314T101500Z.wav", metadata={"facility": "P9"})
    upload(moto_bucket, "P1/PT-2/20260314T101600Z.wav")
    with caplog.at_level("WARNING", logger="transcriber.ingest.scan"):
        result = scan(s3_client(moto_bucket), db, moto_bucket, Recorder(db))
    assert (result.listed, result.registered) == (2, 2)
    assert "s3:ListBucketVersions" in caplog.text
    with Session(db) as session:
        rows = session.scalars(select(AudioObject).order_by(AudioObject.key)).all()
    # Read with HEAD: the metadata is known from the start.
    assert [row.meta["facility"] for row in rows] == ["P9", "P1"]
    assert [row.meta["s3_metadata"] for row in rows] == [{"facility": "P9"}, {}]
