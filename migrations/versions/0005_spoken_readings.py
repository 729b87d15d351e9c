"""transcript_mentions and spoken_readings: sensor readings said in transcripts, and the
sensor's own reading nearest to when each was said.

``transcript_mentions`` holds what :func:`transcriber.mentions.extract` finds, written with
the transcript (``transcriber.transcripts.save_transcription``) and replaced with it.
``spoken_readings`` puts each mention next to its sensor's reading nearest ``said_at`` within
``SPOKEN_READINGS_WINDOW_S``, the difference, and whether the two agree within the tolerance
written on the mention.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# A mention is compared with its sensor's reading nearest the moment it was said, if one lies
# within this many seconds before or after it; else there is nothing to compare (agrees NULL).
# Documented in the README; changing it takes a new migration.
SPOKEN_READINGS_WINDOW_S = 300

_ATTRIBUTIONS = ("named", "own_sensor", "only_of_kind")  # schema.ATTRIBUTIONS, as of 0005


def _columns(reading_ts: str, reading_value: str) -> str:
    """The view's columns, ``reading_ts``/``reading_value`` being the nearest reading's."""
    difference = f"m.value_in_sensor_unit - {reading_value}"
    # NULL (no reading, no value in the sensor's unit, or no tolerance for the sensor's kind)
    # stays NULL: abs(NULL) <= x and x <= NULL are both NULL.
    agrees = (
        f"abs({difference}) <= "
        f"coalesce(m.tolerance_abs, abs({reading_value}) * m.tolerance_pct / 100.0)"
    )
    return f"""
    m.id AS mention_id, m.transcript_id, m.segment_id, t.job_id, t.audio_object_id, a.key,
    m.facility_id, f.code AS facility_code,
    m.sensor_id, se.code AS sensor_code, se.kind AS sensor_kind,
    m.said_at, m.spoken_text, m.sensor_text, m.spoken_value, m.spoken_unit,
    m.value_in_sensor_unit, se.unit AS sensor_unit,
    {reading_ts} AS reading_ts, {reading_value} AS reading_value,
    {difference} AS difference,
    {agrees} AS agrees,
    m.tolerance_abs, m.tolerance_pct, m.attribution, m.match_score, m.probability"""


_FROM = """
FROM transcript_mentions m
JOIN transcripts t ON t.id = m.transcript_id
JOIN audio_objects a ON a.id = t.audio_object_id
LEFT JOIN facilities f ON f.id = m.facility_id
LEFT JOIN sensors se ON se.id = m.sensor_id"""

# The last reading at or before said_at and the first after it, each one step of the
# (sensor_id, ts) primary key however many readings the window holds; the nearer wins, the
# earlier on a tie.
SPOKEN_READINGS_POSTGRESQL = f"""
CREATE VIEW spoken_readings AS
SELECT {_columns("r.ts", "r.value")}
{_FROM}
LEFT JOIN LATERAL (
    SELECT c.ts, c.value FROM (
        (SELECT b.ts, b.value FROM sensor_readings b
         WHERE b.sensor_id = m.sensor_id AND b.ts <= m.said_at
           AND b.ts >= m.said_at - interval '{SPOKEN_READINGS_WINDOW_S} seconds'
         ORDER BY b.ts DESC LIMIT 1)
        UNION ALL
        (SELECT n.ts, n.value FROM sensor_readings n
         WHERE n.sensor_id = m.sensor_id AND n.ts > m.said_at
           AND n.ts <= m.said_at + interval '{SPOKEN_READINGS_WINDOW_S} seconds'
         ORDER BY n.ts LIMIT 1)
    ) c
    ORDER BY abs(EXTRACT(EPOCH FROM (c.ts - m.said_at))), c.ts
    LIMIT 1
) r ON true
"""

# SQLite has no LATERAL: the nearest reading's time is a correlated scalar subquery over the
# same two candidates, and the reading is joined by its primary key. Timestamps are UTC text
# compared as text, which keeps the primary key usable; the window's bounds are padded to six
# digits as in segment_readings (0001), rounding them outwards by under a millisecond.
_BEFORE = f"""(SELECT b.ts FROM sensor_readings b
             WHERE b.sensor_id = m.sensor_id AND b.ts <= m.said_at
               AND b.ts >= strftime('%Y-%m-%d %H:%M:%f', m.said_at,
                                    '-{SPOKEN_READINGS_WINDOW_S} seconds') || '000'
             ORDER BY b.ts DESC LIMIT 1)"""
_AFTER = f"""(SELECT n.ts FROM sensor_readings n
             WHERE n.sensor_id = m.sensor_id AND n.ts > m.said_at
               AND n.ts <= strftime('%Y-%m-%d %H:%M:%f', m.said_at,
                                    '+{SPOKEN_READINGS_WINDOW_S} seconds') || '999'
             ORDER BY n.ts LIMIT 1)"""
SPOKEN_READINGS_SQLITE = f"""
CREATE VIEW spoken_readings AS
SELECT {_columns("r.ts", "r.value")}
{_FROM}
LEFT JOIN sensor_readings r ON r.sensor_id = m.sensor_id AND r.ts = (
    SELECT CASE
        WHEN c.before_ts IS NULL THEN c.after_ts
        WHEN c.after_ts IS NULL THEN c.before_ts
        WHEN julianday(c.after_ts) - julianday(m.said_at)
             < julianday(m.said_at) - julianday(c.before_ts) THEN c.after_ts
        ELSE c.before_ts
    END
    FROM (SELECT {_BEFORE} AS before_ts,
                 {_AFTER} AS after_ts) c
)
"""


def upgrade() -> None:
    op.create_table(
        "transcript_mentions",
        sa.Column("id", BigId, nullable=False),
        sa.Column("transcript_id", BigId, nullable=False),
        sa.Column("segment_id", BigId, nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=True),
        sa.Column("sensor_id", sa.Integer(), nullable=True),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("start_s", sa.Double(), nullable=False),
        sa.Column("end_s", sa.Double(), nullable=False),
        sa.Column("said_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("spoken_text", sa.Text(), nullable=False),
        sa.Column("sensor_text", sa.Text(), nullable=True),
        sa.Column("spoken_value", sa.Double(), nullable=False),
        sa.Column("spoken_unit", sa.Text(), nullable=True),
        sa.Column("value_in_sensor_unit", sa.Double(), nullable=True),
        sa.Column("attribution", sa.String(16), nullable=True),
        sa.Column("match_score", sa.Double(), nullable=True),
        sa.Column("probability", sa.Double(), nullable=True),
        sa.Column("tolerance_abs", sa.Double(), nullable=True),
        sa.Column("tolerance_pct", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_transcript_mentions"),
        sa.ForeignKeyConstraint(
            ["transcript_id"],
            ["transcripts.id"],
            name="fk_transcript_mentions_transcript_id_transcripts",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["segment_id"],
            ["transcript_segments.id"],
            name="fk_transcript_mentions_segment_id_transcript_segments",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["facility_id"],
            ["facilities.id"],
            name="fk_transcript_mentions_facility_id_facilities",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["sensor_id"],
            ["sensors.id"],
            name="fk_transcript_mentions_sensor_id_sensors",
            ondelete="SET NULL",
        ),
        sa.UniqueConstraint(
            "transcript_id", "idx", name="uq_transcript_mentions_transcript_id_idx"
        ),
        sa.CheckConstraint(
            f"attribution IN ({', '.join(repr(v) for v in _ATTRIBUTIONS)})",
            name="ck_transcript_mentions_attribution",
        ),
        sa.CheckConstraint(
            "tolerance_abs IS NULL OR tolerance_pct IS NULL",
            name="ck_transcript_mentions_one_tolerance",
        ),
    )
    op.create_index("ix_transcript_mentions_segment_id", "transcript_mentions", ["segment_id"])
    op.create_index(
        "ix_transcript_mentions_sensor_id_said_at", "transcript_mentions", ["sensor_id", "said_at"]
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(SPOKEN_READINGS_POSTGRESQL)
    else:
        op.execute(SPOKEN_READINGS_SQLITE)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS spoken_readings")
    op.drop_table("transcript_mentions")
