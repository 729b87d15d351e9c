"""transcript_segments.facility_id: a segment finds its facility without two joins.

``segment_readings`` for one facility and one day reached the facility's segments only
through ``transcripts`` and ``audio_objects``: the planner read every facility's segments of
the day by ``starts_at`` (20 times too many at 20 facilities) and joined each to its audio
object to filter on the facility; at 10 million readings and a million segments that was about
40 % of the query (docs/benchmarks.md, SQL at size). With the facility on the segment and an
index on ``(facility_id, starts_at)``, the day's segments of one facility are one index range,
and the segments of other facilities are left out without a join.

The column is a copy of the audio object's ``facility_id``, kept by the database: filled here
for the segments there are, by a trigger for each new segment written without it, and by
another when an audio object's facility changes (an object placed again, or a fix made by hand
in SQL), so that ``segment_readings`` returns what it returned before
(tests/test_segment_facility.py compares the old and new view on the same data). Deleting a
facility sets both to NULL (``ON DELETE SET NULL``, as on ``audio_objects``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# 0001's view, but for where the facility comes from; the window and the columns are 0001's
# (documented in the README; changing them takes a new migration).
_INITIAL = importlib.import_module("transcriber.migrations.versions.0001_initial")
OLD_SEGMENT_READINGS: dict[str, str] = {
    "postgresql": _INITIAL.SEGMENT_READINGS_POSTGRESQL,
    "sqlite": _INITIAL.SEGMENT_READINGS_SQLITE,
}
_WINDOW_S: int = _INITIAL.SEGMENT_READINGS_WINDOW_S
_THROUGH_AUDIO = (
    "JOIN audio_objects a ON a.id = t.audio_object_id\nJOIN facilities f ON f.id = a.facility_id"
)
_OWN_FACILITY = "JOIN facilities f ON f.id = s.facility_id"
_READINGS_JOIN = "JOIN sensor_readings r ON r.sensor_id = se.id\n"
_WINDOW = f"""    AND r.ts >= s.starts_at - interval '{_WINDOW_S} seconds'
    AND r.ts <= s.ends_at + interval '{_WINDOW_S} seconds'
"""

# PostgreSQL: the readings of a segment's window as a LATERAL subquery, fenced with OFFSET 0 so
# that the planner keeps it a subquery. Joined flat, the window is two inequalities against
# another table's columns, which the planner takes to keep a third of the rows each: 556
# readings per segment and sensor where there are 10 at a tenth of the benchmark's size. That
# estimate made it choose a parallel plan for the documented query (the segments' share was
# 10 % of its time, merging the workers' sorted rows the rest) and, for a query on
# ``facility_id``, a merge join over every reading of the facility's sensors (3.5 s where the
# LATERAL form takes 0.14 s). Fenced, a window is estimated as a range (25 readings) and every
# plan probes the primary key once per segment and sensor.
_LATERAL_READINGS = f"""JOIN LATERAL (
    SELECT r.ts, r.value FROM sensor_readings r
    WHERE r.sensor_id = se.id
{_WINDOW.replace("    AND", "      AND")}    OFFSET 0
) r ON true
"""


def segment_readings(dialect: str) -> str:
    """The ``CREATE VIEW`` of ``segment_readings`` for ``dialect`` from 0006 on: 0001's, with
    the segment's own facility and, on PostgreSQL, the readings as a LATERAL subquery."""
    view = OLD_SEGMENT_READINGS[dialect]
    for old, new in [(_THROUGH_AUDIO, _OWN_FACILITY)] + (
        [(_READINGS_JOIN + _WINDOW, _LATERAL_READINGS)] if dialect == "postgresql" else []
    ):
        if old not in view:
            raise AssertionError(f"0001's segment_readings changed: {old!r} not in it")
        view = view.replace(old, new)
    return view


# The copy is the database's to keep: a segment written without it takes its audio object's
# facility, and a change of an audio object's facility reaches its segments.
_PG_TRIGGERS = """
CREATE FUNCTION transcript_segments_facility() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.facility_id IS NULL THEN
        SELECT a.facility_id INTO NEW.facility_id
        FROM transcripts t JOIN audio_objects a ON a.id = t.audio_object_id
        WHERE t.id = NEW.transcript_id;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER transcript_segments_facility BEFORE INSERT ON transcript_segments
FOR EACH ROW EXECUTE FUNCTION transcript_segments_facility();
CREATE FUNCTION audio_objects_facility_to_segments() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE transcript_segments s SET facility_id = NEW.facility_id
    FROM transcripts t
    WHERE t.audio_object_id = NEW.id AND s.transcript_id = t.id
      AND s.facility_id IS DISTINCT FROM NEW.facility_id;
    RETURN NULL;
END $$;
CREATE TRIGGER audio_objects_facility_to_segments
AFTER UPDATE OF facility_id ON audio_objects
FOR EACH ROW WHEN (OLD.facility_id IS DISTINCT FROM NEW.facility_id)
EXECUTE FUNCTION audio_objects_facility_to_segments();
"""
_PG_DROP = """
DROP TRIGGER transcript_segments_facility ON transcript_segments;
DROP FUNCTION transcript_segments_facility();
DROP TRIGGER audio_objects_facility_to_segments ON audio_objects;
DROP FUNCTION audio_objects_facility_to_segments();
"""
# SQLite's triggers cannot change the row being inserted: the copy is set right after it.
_SQLITE_TRIGGERS = [
    """
CREATE TRIGGER transcript_segments_facility AFTER INSERT ON transcript_segments
WHEN NEW.facility_id IS NULL
BEGIN
    UPDATE transcript_segments SET facility_id = (
        SELECT a.facility_id FROM transcripts t JOIN audio_objects a ON a.id = t.audio_object_id
        WHERE t.id = NEW.transcript_id)
    WHERE id = NEW.id;
END
""",
    """
CREATE TRIGGER audio_objects_facility_to_segments
AFTER UPDATE OF facility_id ON audio_objects
WHEN OLD.facility_id IS NOT NEW.facility_id
BEGIN
    UPDATE transcript_segments SET facility_id = NEW.facility_id
    WHERE transcript_id IN (SELECT id FROM transcripts WHERE audio_object_id = NEW.id);
END
""",
]


def _fts_triggers() -> None:
    """SQLite: the triggers that keep transcript_segments_fts, as 0001 made them."""
    for statement in _INITIAL.SQLITE_FTS[1:]:
        op.execute(statement)


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.execute("DROP VIEW segment_readings")
    if dialect == "postgresql":
        op.add_column("transcript_segments", sa.Column("facility_id", sa.Integer()))
        op.create_foreign_key(
            "fk_transcript_segments_facility_id_facilities",
            "transcript_segments",
            "facilities",
            ["facility_id"],
            ["id"],
            ondelete="SET NULL",
        )
        op.execute(
            "UPDATE transcript_segments s SET facility_id = a.facility_id "
            "FROM transcripts t JOIN audio_objects a ON a.id = t.audio_object_id "
            "WHERE t.id = s.transcript_id AND a.facility_id IS NOT NULL"
        )
        op.execute(_PG_TRIGGERS)
    else:
        # SQLite adds a foreign key only by copying the table, which drops the triggers that
        # keep the full-text index: they are made again (the index itself stays right, the
        # rows keep their ids and text).
        with op.batch_alter_table("transcript_segments", recreate="always") as batch:
            batch.add_column(sa.Column("facility_id", sa.Integer()))
            batch.create_foreign_key(
                "fk_transcript_segments_facility_id_facilities",
                "facilities",
                ["facility_id"],
                ["id"],
                ondelete="SET NULL",
            )
        _fts_triggers()
        op.execute(
            "UPDATE transcript_segments SET facility_id = (SELECT a.facility_id "
            "FROM transcripts t JOIN audio_objects a ON a.id = t.audio_object_id "
            "WHERE t.id = transcript_segments.transcript_id)"
        )
        for trigger in _SQLITE_TRIGGERS:
            op.execute(trigger)
    op.create_index(
        "ix_transcript_segments_facility_id_starts_at",
        "transcript_segments",
        ["facility_id", "starts_at"],
    )
    op.execute(segment_readings(dialect))


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.execute("DROP VIEW segment_readings")
    op.drop_index("ix_transcript_segments_facility_id_starts_at", "transcript_segments")
    if dialect == "postgresql":
        op.execute(_PG_DROP)
        op.drop_constraint(
            "fk_transcript_segments_facility_id_facilities", "transcript_segments", "foreignkey"
        )
        op.drop_column("transcript_segments", "facility_id")
    else:
        op.execute("DROP TRIGGER transcript_segments_facility")
        op.execute("DROP TRIGGER audio_objects_facility_to_segments")
        # SQLite drops no column that a foreign key uses: the table is copied without it.
        with op.batch_alter_table("transcript_segments", recreate="always") as batch:
            batch.drop_column("facility_id")
        _fts_triggers()
    op.execute(OLD_SEGMENT_READINGS[dialect])
