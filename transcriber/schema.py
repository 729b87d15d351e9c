"""The SQL schema: sensor analytics tables and the transcription tables that join to them.

The tables are the product's public interface (users query them directly), so their names
and columns change only on purpose, through a migration in ``migrations/``. Objects that
exist on one dialect only, or that SQLAlchemy does not model — the PostgreSQL ``tsvector``
column and its GIN index, the SQLite FTS5 table and its triggers, the PostgreSQL
``transcription_job_counts`` table and its triggers (jobs per status, see
:func:`transcriber.jobs.status`), and the views (``segment_readings``, ``latest_transcripts``,
``spoken_readings``) — live in the migrations alone (``migrations/versions``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal, get_args

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from transcriber.clock import as_utc

JobStatus = Literal["queued", "running", "succeeded", "failed", "superseded"]
JOB_STATUSES: tuple[JobStatus, ...] = get_args(JobStatus)
# Where an object's recording time came from (transcriber.placement).
RecordedAtSource = Literal["metadata", "key", "last_modified"]
RECORDED_AT_SOURCES: tuple[RecordedAtSource, ...] = get_args(RecordedAtSource)
# How a reading said in a transcript was given its sensor (transcriber.mentions).
Attribution = Literal["named", "own_sensor", "only_of_kind"]
ATTRIBUTIONS: tuple[Attribution, ...] = get_args(Attribution)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    """A CHECK constraint's text: ``column`` holds one of ``values``."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


# Deterministic constraint names, so that migrations can drop and alter them by name on
# both dialects (SQLite has no ALTER for unnamed constraints).
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp, stored in UTC.

    PostgreSQL keeps it as ``timestamptz``. SQLite has no timestamp type and SQLAlchemy's
    SQLite storage drops the offset, so values are converted to UTC before they are written
    (as ``YYYY-MM-DD HH:MM:SS.ffffff`` text, which sorts and compares in time order) and come
    back marked UTC. A naive datetime is taken to be UTC already.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return as_utc(value)


# JSONB on PostgreSQL (indexable, compact), JSON text on SQLite.
JSONDoc = JSON().with_variant(JSONB(), "postgresql")

# Integer on SQLite, where only INTEGER PRIMARY KEY is an alias of the rowid (and so
# autoincrements); BIGINT on PostgreSQL for the tables that grow without bound.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime}


# --- Sensor analytics -------------------------------------------------------------------


class Facility(Base):
    """A site: a plant, a station, a depot."""

    __tablename__ = "facilities"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), server_default="UTC")
    region: Mapped[str | None] = mapped_column(String(100))

    sensors: Mapped[list[Sensor]] = relationship(back_populates="facility")


class Sensor(Base):
    """A sensor at a facility; deleting a facility deletes its sensors and their readings."""

    __tablename__ = "sensors"
    __table_args__ = (UniqueConstraint("facility_id", "code"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facilities.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    unit: Mapped[str] = mapped_column(String(32))
    description: Mapped[str | None] = mapped_column(Text)

    facility: Mapped[Facility] = relationship(back_populates="sensors")


class SensorReading(Base):
    """One value of one sensor at one time; the primary key serves lookups by sensor and time."""

    __tablename__ = "sensor_readings"

    sensor_id: Mapped[int] = mapped_column(
        ForeignKey("sensors.id", ondelete="CASCADE"), primary_key=True
    )
    ts: Mapped[datetime] = mapped_column(primary_key=True)
    value: Mapped[float] = mapped_column(Double)


# --- Transcription ----------------------------------------------------------------------


class AudioObject(Base):
    """One version of one object in the bucket.

    ``version_id`` is the S3 version, or ``''`` in a bucket without versioning, where the ETag
    tells versions apart; the unique constraint makes registering the same version twice a
    no-op. Deleting a facility or sensor keeps its audio and transcripts (the codes stay in
    ``metadata``).
    """

    __tablename__ = "audio_objects"
    __table_args__ = (
        UniqueConstraint("bucket", "key", "version_id", "etag"),
        CheckConstraint(
            _one_of("recorded_at_source", RECORDED_AT_SOURCES), name="recorded_at_source"
        ),
        Index(None, "facility_id", "recorded_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    bucket: Mapped[str] = mapped_column(String(63))
    key: Mapped[str] = mapped_column(String(1024))
    version_id: Mapped[str] = mapped_column(String(1024), default="")
    etag: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str | None] = mapped_column(String(255))
    facility_id: Mapped[int | None] = mapped_column(
        ForeignKey("facilities.id", ondelete="SET NULL")
    )
    sensor_id: Mapped[int | None] = mapped_column(
        ForeignKey("sensors.id", ondelete="SET NULL"), index=True
    )
    recorded_at: Mapped[datetime]
    recorded_at_source: Mapped[str] = mapped_column(String(16))
    duration_s: Mapped[float | None] = mapped_column(Double)
    sample_rate: Mapped[int | None] = mapped_column(Integer)
    channels: Mapped[int | None] = mapped_column(Integer)
    # "metadata" is reserved on declarative classes, so the attribute has another name.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONDoc, default=dict)
    # S3's event sequencer (hex, grows per key): orders events for one key, so that a late
    # event for an old version never counts as the newest.
    sequencer: Mapped[str | None] = mapped_column(String(64))
    first_seen_at: Mapped[datetime] = mapped_column(server_default=func.now())


class TranscriptionJob(Base):
    """The state of transcribing one audio object; the database, not the broker, owns it."""

    __tablename__ = "transcription_jobs"
    __table_args__ = (
        CheckConstraint(_one_of("status", JOB_STATUSES), name="status"),
        CheckConstraint("attempts >= 0", name="attempts"),
        Index(None, "status", "queued_at"),
        # The newest jobs of one status (`celery -A workers transcriber jobs --status`), and
        # the running jobs the sweeper checks.
        Index(None, "status", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    audio_object_id: Mapped[int] = mapped_column(
        ForeignKey("audio_objects.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(16), server_default="queued")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None]
    queued_at: Mapped[datetime] = mapped_column(server_default=func.now())
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    error_category: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(255))
    device: Mapped[str | None] = mapped_column(String(16))
    compute_type: Mapped[str | None] = mapped_column(String(32))
    options: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)


class Transcript(Base):
    """The result of one job; at most one per job, replaced whole when the job re-runs."""

    __tablename__ = "transcripts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(
        ForeignKey("transcription_jobs.id", ondelete="CASCADE"), unique=True
    )
    audio_object_id: Mapped[int] = mapped_column(
        ForeignKey("audio_objects.id", ondelete="CASCADE"), index=True
    )
    language: Mapped[str | None] = mapped_column(String(16))
    language_probability: Mapped[float | None] = mapped_column(Double)
    duration_s: Mapped[float] = mapped_column(Double)
    text: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(String(255))
    processing_s: Mapped[float | None] = mapped_column(Double)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    segments: Mapped[list[TranscriptSegment]] = relationship(
        back_populates="transcript", order_by="TranscriptSegment.idx"
    )


class TranscriptSegment(Base):
    """A stretch of speech. ``start_s``/``end_s`` are offsets into the audio; ``starts_at``/
    ``ends_at`` are wall-clock (``recorded_at`` + offset), so segments join to readings."""

    __tablename__ = "transcript_segments"
    __table_args__ = (
        UniqueConstraint("transcript_id", "idx"),
        Index(None, "facility_id", "starts_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    transcript_id: Mapped[int] = mapped_column(ForeignKey("transcripts.id", ondelete="CASCADE"))
    facility_id: Mapped[int | None] = mapped_column(
        ForeignKey("facilities.id", ondelete="SET NULL")
    )
    """The audio object's facility, copied so that a facility's segments are one index range
    (``segment_readings``); kept equal by a trigger when the object's facility changes."""
    idx: Mapped[int] = mapped_column(Integer)
    channel: Mapped[int] = mapped_column(Integer, server_default="0")
    start_s: Mapped[float] = mapped_column(Double)
    end_s: Mapped[float] = mapped_column(Double)
    starts_at: Mapped[datetime] = mapped_column(index=True)
    ends_at: Mapped[datetime]
    text: Mapped[str] = mapped_column(Text)
    avg_logprob: Mapped[float | None] = mapped_column(Double)
    no_speech_prob: Mapped[float | None] = mapped_column(Double)
    compression_ratio: Mapped[float | None] = mapped_column(Double)

    transcript: Mapped[Transcript] = relationship(back_populates="segments")
    words: Mapped[list[TranscriptWord]] = relationship(order_by="TranscriptWord.idx")


class TranscriptWord(Base):
    """One word with its timing and probability (when word timestamps are on)."""

    __tablename__ = "transcript_words"
    __table_args__ = (UniqueConstraint("segment_id", "idx"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    segment_id: Mapped[int] = mapped_column(
        ForeignKey("transcript_segments.id", ondelete="CASCADE")
    )
    idx: Mapped[int] = mapped_column(Integer)
    start_s: Mapped[float] = mapped_column(Double)
    end_s: Mapped[float] = mapped_column(Double)
    starts_at: Mapped[datetime]
    word: Mapped[str] = mapped_column(Text)
    probability: Mapped[float | None] = mapped_column(Double)


class TranscriptMention(Base):
    """A sensor reading said in a transcript (:func:`transcriber.mentions.extract`), written
    with the transcript and replaced with it.

    Deleting the transcript or its segment deletes the mention; deleting its sensor or
    facility keeps it, unattributed (``sensor_id``/``facility_id`` NULL; ``attribution`` and
    ``sensor_text`` still say how it was attributed). ``tolerance_abs`` (in the sensor's unit)
    or ``tolerance_pct`` (a percent of the reading) is the tolerance for the sensor's kind in
    force when the mention was written (``TRANSCRIBER_READING_TOLERANCES``); the
    ``spoken_readings`` view compares the value with the sensor's nearest reading by it.
    """

    __tablename__ = "transcript_mentions"
    __table_args__ = (
        UniqueConstraint("transcript_id", "idx"),
        CheckConstraint(_one_of("attribution", ATTRIBUTIONS), name="attribution"),
        CheckConstraint("tolerance_abs IS NULL OR tolerance_pct IS NULL", name="one_tolerance"),
        Index(None, "sensor_id", "said_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    transcript_id: Mapped[int] = mapped_column(ForeignKey("transcripts.id", ondelete="CASCADE"))
    # Indexed for the cascade: deleting a transcript deletes its segments one by one.
    segment_id: Mapped[int] = mapped_column(
        ForeignKey("transcript_segments.id", ondelete="CASCADE"), index=True
    )
    facility_id: Mapped[int | None] = mapped_column(
        ForeignKey("facilities.id", ondelete="SET NULL")
    )
    sensor_id: Mapped[int | None] = mapped_column(ForeignKey("sensors.id", ondelete="SET NULL"))
    idx: Mapped[int] = mapped_column(Integer)
    start_s: Mapped[float] = mapped_column(Double)
    end_s: Mapped[float] = mapped_column(Double)
    said_at: Mapped[datetime]
    spoken_text: Mapped[str] = mapped_column(Text)
    sensor_text: Mapped[str | None] = mapped_column(Text)
    spoken_value: Mapped[float] = mapped_column(Double)
    spoken_unit: Mapped[str | None] = mapped_column(Text)
    value_in_sensor_unit: Mapped[float | None] = mapped_column(Double)
    attribution: Mapped[str | None] = mapped_column(String(16))
    match_score: Mapped[float | None] = mapped_column(Double)
    probability: Mapped[float | None] = mapped_column(Double)
    tolerance_abs: Mapped[float | None] = mapped_column(Double)
    tolerance_pct: Mapped[float | None] = mapped_column(Double)
