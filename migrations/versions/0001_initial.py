"""Initial schema: sensor analytics, transcription tables, full-text search and the views.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSONDoc = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


# Readings this far before a segment starts and after it ends belong to it in the
# segment_readings view. Documented in the README; changing it takes a new migration.
SEGMENT_READINGS_WINDOW_S = 300

_SEGMENT_READINGS_COLUMNS = """
    s.id AS segment_id, s.transcript_id, t.job_id, t.audio_object_id,
    f.id AS facility_id, f.code AS facility_code,
    s.channel, s.starts_at, s.ends_at, s.text,
    se.id AS sensor_id, se.code AS sensor_code, se.kind AS sensor_kind, se.unit AS sensor_unit,
    r.ts AS reading_ts, r.value AS reading_value"""

_SEGMENT_READINGS_FROM = """
FROM transcript_segments s
JOIN transcripts t ON t.id = s.transcript_id
JOIN audio_objects a ON a.id = t.audio_object_id
JOIN facilities f ON f.id = a.facility_id
JOIN sensors se ON se.facility_id = f.id
JOIN sensor_readings r ON r.sensor_id = se.id"""

SEGMENT_READINGS_POSTGRESQL = f"""
CREATE VIEW segment_readings AS
SELECT {_SEGMENT_READINGS_COLUMNS},
    EXTRACT(EPOCH FROM (r.ts - s.starts_at))::double precision AS offset_s
{_SEGMENT_READINGS_FROM}
    AND r.ts >= s.starts_at - interval '{SEGMENT_READINGS_WINDOW_S} seconds'
    AND r.ts <= s.ends_at + interval '{SEGMENT_READINGS_WINDOW_S} seconds'
"""

# SQLite keeps timestamps as 'YYYY-MM-DD HH:MM:SS.ffffff' text in UTC, which compares in time
# order as long as both sides have that exact shape. strftime's %f gives milliseconds, so the
# bounds are padded back to six digits, rounding the window outwards by under a millisecond.
# Comparing text (not julianday()) keeps the (sensor_id, ts) primary key usable.
SEGMENT_READINGS_SQLITE = f"""
CREATE VIEW segment_readings AS
SELECT {_SEGMENT_READINGS_COLUMNS},
    (julianday(r.ts) - julianday(s.starts_at)) * 86400.0 AS offset_s
{_SEGMENT_READINGS_FROM}
    AND r.ts >= strftime('%Y-%m-%d %H:%M:%f', s.starts_at, '-{SEGMENT_READINGS_WINDOW_S} seconds')
        || '000'
    AND r.ts <= strftime('%Y-%m-%d %H:%M:%f', s.ends_at, '+{SEGMENT_READINGS_WINDOW_S} seconds')
        || '999'
"""

# The current transcript of each audio object is its newest one.
LATEST_TRANSCRIPTS = """
CREATE VIEW latest_transcripts AS
SELECT t.id AS transcript_id, t.job_id, t.audio_object_id,
    a.bucket, a.key, a.version_id, a.recorded_at, a.recorded_at_source,
    a.facility_id, f.code AS facility_code, a.sensor_id, se.code AS sensor_code,
    t.language, t.language_probability, t.duration_s, t.text, t.model, t.processing_s,
    t.created_at
FROM transcripts t
JOIN audio_objects a ON a.id = t.audio_object_id
LEFT JOIN facilities f ON f.id = a.facility_id
LEFT JOIN sensors se ON se.id = a.sensor_id
WHERE NOT EXISTS (
    SELECT 1 FROM transcripts newer
    WHERE newer.audio_object_id = t.audio_object_id AND newer.id > t.id
)
"""

# Full-text search. PostgreSQL: a generated tsvector column with a GIN index, queried with
#   WHERE text_search @@ websearch_to_tsquery('english', 'pressure valve')
# SQLite: an external-content FTS5 table over transcript_segments kept in sync by triggers,
#   WHERE id IN (SELECT rowid FROM transcript_segments_fts WHERE transcript_segments_fts
#                MATCH 'pressure valve')
# Both stem English (Porter), so "valves" finds "valve". A later migration that rebuilds
# transcript_segments on SQLite (batch mode) must re-create the triggers.
POSTGRESQL_FTS = [
    "ALTER TABLE transcript_segments ADD COLUMN text_search tsvector "
    "GENERATED ALWAYS AS (to_tsvector('english'::regconfig, text)) STORED",
    "CREATE INDEX ix_transcript_segments_text_search ON transcript_segments "
    "USING gin (text_search)",
]
SQLITE_FTS = [
    "CREATE VIRTUAL TABLE transcript_segments_fts USING fts5("
    "text, content='transcript_segments', content_rowid='id', tokenize='porter unicode61')",
    "CREATE TRIGGER transcript_segments_fts_insert AFTER INSERT ON transcript_segments BEGIN "
    "INSERT INTO transcript_segments_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER transcript_segments_fts_delete AFTER DELETE ON transcript_segments BEGIN "
    "INSERT INTO transcript_segments_fts(transcript_segments_fts, rowid, text) "
    "VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER transcript_segments_fts_update AFTER UPDATE OF text ON transcript_segments "
    "BEGIN "
    "INSERT INTO transcript_segments_fts(transcript_segments_fts, rowid, text) "
    "VALUES ('delete', old.id, old.text); "
    "INSERT INTO transcript_segments_fts(rowid, text) VALUES (new.id, new.text); END",
]


def upgrade() -> None:
    op.create_table(
        "facilities",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("timezone", sa.String(64), server_default="UTC", nullable=False),
        sa.Column("region", sa.String(100), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_facilities"),
        sa.UniqueConstraint("code", name="uq_facilities_code"),
    )
    op.create_table(
        "sensors",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("unit", sa.String(32), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sensors"),
        sa.ForeignKeyConstraint(
            ["facility_id"],
            ["facilities.id"],
            name="fk_sensors_facility_id_facilities",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("facility_id", "code", name="uq_sensors_facility_id_code"),
    )
    op.create_table(
        "sensor_readings",
        sa.Column("sensor_id", sa.Integer(), nullable=False),
        sa.Column("ts", _ts(), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("sensor_id", "ts", name="pk_sensor_readings"),
        sa.ForeignKeyConstraint(
            ["sensor_id"],
            ["sensors.id"],
            name="fk_sensor_readings_sensor_id_sensors",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "audio_objects",
        sa.Column("id", BigId, nullable=False),
        sa.Column("bucket", sa.String(63), nullable=False),
        sa.Column("key", sa.String(1024), nullable=False),
        sa.Column("version_id", sa.String(1024), nullable=False),
        sa.Column("etag", sa.String(255), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("content_type", sa.String(255), nullable=True),
        sa.Column("facility_id", sa.Integer(), nullable=True),
        sa.Column("sensor_id", sa.Integer(), nullable=True),
        sa.Column("recorded_at", _ts(), nullable=False),
        sa.Column("recorded_at_source", sa.String(16), nullable=False),
        sa.Column("duration_s", sa.Double(), nullable=True),
        sa.Column("sample_rate", sa.Integer(), nullable=True),
        sa.Column("channels", sa.Integer(), nullable=True),
        sa.Column("metadata", JSONDoc, nullable=False),
        sa.Column("first_seen_at", _ts(), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audio_objects"),
        sa.ForeignKeyConstraint(
            ["facility_id"],
            ["facilities.id"],
            name="fk_audio_objects_facility_id_facilities",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["sensor_id"],
            ["sensors.id"],
            name="fk_audio_objects_sensor_id_sensors",
            ondelete="SET NULL",
        ),
        sa.UniqueConstraint(
            "bucket",
            "key",
            "version_id",
            "etag",
            name="uq_audio_objects_bucket_key_version_id_etag",
        ),
        sa.CheckConstraint(
            "recorded_at_source IN ('metadata', 'key', 'last_modified')",
            name="ck_audio_objects_recorded_at_source",
        ),
    )
    op.create_index(
        "ix_audio_objects_facility_id_recorded_at", "audio_objects", ["facility_id", "recorded_at"]
    )
    op.create_index("ix_audio_objects_sensor_id", "audio_objects", ["sensor_id"])
    op.create_table(
        "transcription_jobs",
        sa.Column("id", BigId, nullable=False),
        sa.Column("audio_object_id", BigId, nullable=False),
        sa.Column("status", sa.String(16), server_default="queued", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("lease_owner", sa.String(255), nullable=True),
        sa.Column("lease_expires_at", _ts(), nullable=True),
        sa.Column("queued_at", _ts(), server_default=sa.func.now(), nullable=False),
        sa.Column("started_at", _ts(), nullable=True),
        sa.Column("finished_at", _ts(), nullable=True),
        sa.Column("error_category", sa.String(64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("model", sa.String(255), nullable=True),
        sa.Column("device", sa.String(16), nullable=True),
        sa.Column("compute_type", sa.String(32), nullable=True),
        sa.Column("options", JSONDoc, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_transcription_jobs"),
        sa.ForeignKeyConstraint(
            ["audio_object_id"],
            ["audio_objects.id"],
            name="fk_transcription_jobs_audio_object_id_audio_objects",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'superseded')",
            name="ck_transcription_jobs_status",
        ),
        sa.CheckConstraint("attempts >= 0", name="ck_transcription_jobs_attempts"),
    )
    op.create_index(
        "ix_transcription_jobs_audio_object_id", "transcription_jobs", ["audio_object_id"]
    )
    op.create_index(
        "ix_transcription_jobs_status_queued_at", "transcription_jobs", ["status", "queued_at"]
    )
    op.create_table(
        "transcripts",
        sa.Column("id", BigId, nullable=False),
        sa.Column("job_id", BigId, nullable=False),
        sa.Column("audio_object_id", BigId, nullable=False),
        sa.Column("language", sa.String(16), nullable=True),
        sa.Column("language_probability", sa.Double(), nullable=True),
        sa.Column("duration_s", sa.Double(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("processing_s", sa.Double(), nullable=True),
        sa.Column("created_at", _ts(), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_transcripts"),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["transcription_jobs.id"],
            name="fk_transcripts_job_id_transcription_jobs",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["audio_object_id"],
            ["audio_objects.id"],
            name="fk_transcripts_audio_object_id_audio_objects",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("job_id", name="uq_transcripts_job_id"),
    )
    op.create_index("ix_transcripts_audio_object_id", "transcripts", ["audio_object_id"])
    op.create_table(
        "transcript_segments",
        sa.Column("id", BigId, nullable=False),
        sa.Column("transcript_id", BigId, nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("channel", sa.Integer(), server_default="0", nullable=False),
        sa.Column("start_s", sa.Double(), nullable=False),
        sa.Column("end_s", sa.Double(), nullable=False),
        sa.Column("starts_at", _ts(), nullable=False),
        sa.Column("ends_at", _ts(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("avg_logprob", sa.Double(), nullable=True),
        sa.Column("no_speech_prob", sa.Double(), nullable=True),
        sa.Column("compression_ratio", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_transcript_segments"),
        sa.ForeignKeyConstraint(
            ["transcript_id"],
            ["transcripts.id"],
            name="fk_transcript_segments_transcript_id_transcripts",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "transcript_id", "idx", name="uq_transcript_segments_transcript_id_idx"
        ),
    )
    op.create_index("ix_transcript_segments_starts_at", "transcript_segments", ["starts_at"])
    op.create_table(
        "transcript_words",
        sa.Column("id", BigId, nullable=False),
        sa.Column("segment_id", BigId, nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("start_s", sa.Double(), nullable=False),
        sa.Column("end_s", sa.Double(), nullable=False),
        sa.Column("starts_at", _ts(), nullable=False),
        sa.Column("word", sa.Text(), nullable=False),
        sa.Column("probability", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_transcript_words"),
        sa.ForeignKeyConstraint(
            ["segment_id"],
            ["transcript_segments.id"],
            name="fk_transcript_words_segment_id_transcript_segments",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("segment_id", "idx", name="uq_transcript_words_segment_id_idx"),
    )

    if op.get_bind().dialect.name == "postgresql":
        for statement in POSTGRESQL_FTS:
            op.execute(statement)
        op.execute(SEGMENT_READINGS_POSTGRESQL)
    else:
        for statement in SQLITE_FTS:
            op.execute(statement)
        op.execute(SEGMENT_READINGS_SQLITE)
    op.execute(LATEST_TRANSCRIPTS)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS latest_transcripts")
    op.execute("DROP VIEW IF EXISTS segment_readings")
    if op.get_bind().dialect.name == "sqlite":
        for suffix in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS transcript_segments_fts_{suffix}")
        op.execute("DROP TABLE IF EXISTS transcript_segments_fts")
    for table in (
        "transcript_words",
        "transcript_segments",
        "transcripts",
        "transcription_jobs",
        "audio_objects",
        "sensor_readings",
        "sensors",
        "facilities",
    ):
        op.drop_table(table)
