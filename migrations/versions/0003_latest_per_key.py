"""latest_transcripts: the newest transcript per object key, across its versions.

A new version of a key is a new audio object with its own transcript; what a user asks for
is the key's current transcript, so the view now picks, per (bucket, key), the transcript of
the newest registered version (and within it, the newest transcript).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = """
SELECT t.id AS transcript_id, t.job_id, t.audio_object_id,
    a.bucket, a.key, a.version_id, a.recorded_at, a.recorded_at_source,
    a.facility_id, f.code AS facility_code, a.sensor_id, se.code AS sensor_code,
    t.language, t.language_probability, t.duration_s, t.text, t.model, t.processing_s,
    t.created_at
FROM transcripts t
JOIN audio_objects a ON a.id = t.audio_object_id
LEFT JOIN facilities f ON f.id = a.facility_id
LEFT JOIN sensors se ON se.id = a.sensor_id
"""

PER_KEY = f"""
CREATE VIEW latest_transcripts AS {_COLUMNS}
WHERE NOT EXISTS (
    SELECT 1 FROM transcripts newer
    JOIN audio_objects na ON na.id = newer.audio_object_id
    WHERE na.bucket = a.bucket AND na.key = a.key
      AND (na.id > a.id OR (na.id = a.id AND newer.id > t.id))
)
"""

PER_OBJECT = f"""
CREATE VIEW latest_transcripts AS {_COLUMNS}
WHERE NOT EXISTS (
    SELECT 1 FROM transcripts newer
    WHERE newer.audio_object_id = t.audio_object_id AND newer.id > t.id
)
"""


def upgrade() -> None:
    op.execute("DROP VIEW latest_transcripts")
    op.execute(PER_KEY)


def downgrade() -> None:
    op.execute("DROP VIEW latest_transcripts")
    op.execute(PER_OBJECT)
