"""audio_objects.sequencer: the S3 event sequencer, to order events for one key.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("audio_objects", sa.Column("sequencer", sa.String(64), nullable=True))


def downgrade() -> None:
    # SQLite has had DROP COLUMN since 3.35; batch mode's copy-and-rename would trip over
    # the views that name audio_objects.
    op.execute("ALTER TABLE audio_objects DROP COLUMN sequencer")
