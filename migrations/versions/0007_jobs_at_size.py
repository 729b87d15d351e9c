"""Jobs at size: jobs by status, and the count of each kept as jobs change.

At a million queued jobs (``tests/bench/jobs_at_size.py``, docs/benchmarks.md) two of the
queries behind ``celery -A workers transcriber status`` and ``jobs`` read the whole table:
counting the jobs per status read every row (60 to 130 ms), and the newest jobs of one status
walked the primary key backwards past every job of the other statuses (90 ms for
``--status succeeded`` behind a million queued jobs). Hence:

- ``ix_transcription_jobs_status_id``: ``(status, id)``, the newest jobs of one status, and
  the running jobs the sweeper checks, without a pass over the rest. The queue keeps
  ``(status, queued_at)``, which a claim and the sweeper read oldest first: a partial index of
  the queued jobs alone saved a tenth of a millisecond there (0.2 against 0.3 ms), and SQLite,
  which has no statistics to tell it how many jobs are queued, then took ``(status, id)`` and
  sorted the whole queue for each claim (50 ms at 100,000 queued, against 2 ms).
- PostgreSQL: ``transcription_job_counts``, jobs per status kept by statement triggers on
  ``transcription_jobs`` as signed deltas (one row per status a statement changed, folded
  together every 1,024 rows). A count of a million rows costs tens of milliseconds whatever
  the index; the sum of at most a few thousand deltas does not. Deltas, not one row per
  status: each transition would otherwise update the same few rows, so that every worker's
  transaction waited for the others' to commit, and two transitions in opposite directions
  (queued to running, running to queued) could deadlock. SQLite (one writer, small queues)
  counts the table as before.

The sweeper, which selected every queued job older than ``REQUEUE_AFTER_SECONDS`` (120 ms, and
then failed: an UPDATE of over 65,535 ids is more parameters than PostgreSQL takes), now takes
the ``SWEEP_BATCH`` oldest through ``(status, queued_at)``: a change of query
(``transcriber.jobs.sweep``), not of schema.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Deltas since the last fold: about this many rows at most (a fold is skipped while another
# transaction is folding; the next multiple folds then).
_FOLD_EVERY = 1024

_PG_COUNTS = [
    """
CREATE TABLE transcription_job_counts (
    id bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT pk_transcription_job_counts PRIMARY KEY,
    status varchar(16) NOT NULL,
    delta bigint NOT NULL
)""",
    # Statement triggers with transition tables: one INSERT of the net change per status for
    # a whole statement (a claim of 31 jobs writes two rows, a lease renewal none).
    #
    # The fold replaces every delta visible to it with one row per status. It runs in the
    # transaction that crossed a multiple of _FOLD_EVERY, under a transaction-level advisory
    # lock taken without waiting, so two folds never run at once and a fold never waits:
    # deltas of transactions not yet committed are not visible to it and stay as they are,
    # and no other statement locks these rows (readers sum them; writers only insert).
    f"""
CREATE FUNCTION transcription_job_counts_track() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    added bigint;
    last_id bigint;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM transcription_job_counts;
        RETURN NULL;
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO transcription_job_counts (status, delta)
        SELECT status, count(*) FROM new_rows GROUP BY status;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO transcription_job_counts (status, delta)
        SELECT status, sum(delta) FROM (
            SELECT status, count(*) AS delta FROM new_rows GROUP BY status
            UNION ALL
            SELECT status, -count(*) FROM old_rows GROUP BY status
        ) AS changes
        GROUP BY status HAVING sum(delta) <> 0;
    ELSE
        INSERT INTO transcription_job_counts (status, delta)
        SELECT status, -count(*) FROM old_rows GROUP BY status;
    END IF;
    GET DIAGNOSTICS added = ROW_COUNT;
    IF added > 0 THEN
        last_id := currval(pg_get_serial_sequence('transcription_job_counts', 'id'));
        IF last_id / {_FOLD_EVERY} <> (last_id - added) / {_FOLD_EVERY}
            AND pg_try_advisory_xact_lock(hashtext('transcription_job_counts')) THEN
            WITH folded AS (DELETE FROM transcription_job_counts RETURNING status, delta)
            INSERT INTO transcription_job_counts (status, delta)
            SELECT status, sum(delta) FROM folded GROUP BY status HAVING sum(delta) <> 0;
        END IF;
    END IF;
    RETURN NULL;
END
$$""",
    """
CREATE TRIGGER transcription_jobs_count_insert AFTER INSERT ON transcription_jobs
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION transcription_job_counts_track()""",
    """
CREATE TRIGGER transcription_jobs_count_update AFTER UPDATE ON transcription_jobs
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION transcription_job_counts_track()""",
    """
CREATE TRIGGER transcription_jobs_count_delete AFTER DELETE ON transcription_jobs
REFERENCING OLD TABLE AS old_rows
FOR EACH STATEMENT EXECUTE FUNCTION transcription_job_counts_track()""",
    """
CREATE TRIGGER transcription_jobs_count_truncate AFTER TRUNCATE ON transcription_jobs
FOR EACH STATEMENT EXECUTE FUNCTION transcription_job_counts_track()""",
    # The jobs there are. CREATE TRIGGER locked the table against writes until this
    # migration commits, so no job changes between this count and the first delta.
    """
INSERT INTO transcription_job_counts (status, delta)
SELECT status, count(*) FROM transcription_jobs GROUP BY status""",
]

_PG_DROP_COUNTS = [
    *(
        f"DROP TRIGGER IF EXISTS transcription_jobs_count_{event} ON transcription_jobs"
        for event in ("insert", "update", "delete", "truncate")
    ),
    "DROP FUNCTION IF EXISTS transcription_job_counts_track()",
    "DROP TABLE IF EXISTS transcription_job_counts",
]


def upgrade() -> None:
    op.create_index("ix_transcription_jobs_status_id", "transcription_jobs", ["status", "id"])
    if op.get_bind().dialect.name == "postgresql":
        for statement in _PG_COUNTS:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in _PG_DROP_COUNTS:
            op.execute(statement)
    op.drop_index("ix_transcription_jobs_status_id", "transcription_jobs")
