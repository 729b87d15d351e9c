"""The readings said in stored transcripts, found again (``transcriber mentions rebuild``).

A transcript's mentions are attributed to the sensors its facility had when the job saved it.
After sensors were added, renamed or re-described (or ``TRANSCRIBER_READING_TOLERANCES``
changed), this finds them again in the stored words, with the job path's own code
(:func:`transcriber.transcripts.save_mentions`), the audio's current facility, own sensor and
recording time, and the tolerances in force now.

Which transcripts: every stored one (not only the latest of each key), because the
``spoken_readings`` view shows every transcript; narrowed to audio placed at one facility
and/or recorded at or after a time. Each transcript's mentions are replaced in a transaction
of its own, so an interrupted run leaves every transcript either as it was or rebuilt whole,
and running it again gives the same rows (new ids, same content).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from transcriber.config import ReadingTolerance
from transcriber.errors import UnknownFacility
from transcriber.mentions import Mention
from transcriber.schema import AudioObject, Facility, Transcript, TranscriptMention
from transcriber.transcripts import save_mentions, stored_segments

# How many known codes an unknown --facility's error lists: enough to spot a typo.
_CODES_SHOWN = 10


@dataclass
class RebuildResult:
    """What a rebuild did: transcripts rebuilt, and their mentions (and how many of those
    had a sensor) before and after."""

    transcripts: int = 0
    mentions_before: int = 0
    mentions_after: int = 0
    attributed_before: int = 0
    attributed_after: int = 0

    def summary(self) -> str:
        """One line for the command to print."""
        plural = "" if self.transcripts == 1 else "s"
        return (
            f"rebuilt the mentions of {self.transcripts:,} transcript{plural}: "
            f"{self.mentions_before:,} before ({self.attributed_before:,} attributed), "
            f"{self.mentions_after:,} after ({self.attributed_after:,} attributed)"
        )


def transcripts_to_rebuild(
    engine: Engine, *, facility: str | None = None, since: datetime | None = None
) -> list[int]:
    """The ids of the stored transcripts whose audio is placed at ``facility`` (a code) and
    was recorded at or after ``since`` (each when given), oldest transcript first.

    Raises :class:`~transcriber.errors.UnknownFacility` when no facility has that code.
    """
    query = (
        select(Transcript.id)
        .join(AudioObject, AudioObject.id == Transcript.audio_object_id)
        .order_by(Transcript.id)
    )
    with Session(engine) as session:
        if facility is not None:
            facility_id = session.scalar(select(Facility.id).where(Facility.code == facility))
            if facility_id is None:
                raise UnknownFacility(_unknown(session, facility))
            query = query.where(AudioObject.facility_id == facility_id)
        if since is not None:
            query = query.where(AudioObject.recorded_at >= since)
        return list(session.scalars(query))


def _unknown(session: Session, code: str) -> str:
    codes = session.scalars(select(Facility.code).order_by(Facility.code).limit(_CODES_SHOWN + 1))
    known = list(codes)
    if not known:
        return f"no facility has the code {code!r}: there are no facilities yet"
    listed = ", ".join(known[:_CODES_SHOWN]) + (", ..." if len(known) > _CODES_SHOWN else "")
    return f"no facility has the code {code!r} (known: {listed})"


def rebuild(
    engine: Engine,
    transcript_ids: Sequence[int],
    tolerances: Mapping[str, ReadingTolerance],
    advance: Callable[[], None] | None = None,
) -> RebuildResult:
    """Replace the mentions of each of ``transcript_ids`` with those found in its stored words
    now, one transaction per transcript; ``advance`` is called after each. A transcript gone
    since it was listed (its job ran again and saved a new one, with new mentions) is skipped.
    """
    result = RebuildResult()
    for transcript_id in transcript_ids:
        with Session(engine) as session, session.begin():
            done = _rebuild_one(session, transcript_id, tolerances)
        if done is not None:  # counted once committed
            before, after = done
            result.transcripts += 1
            result.mentions_before += len(before)
            result.mentions_after += len(after)
            result.attributed_before += sum(sensor_id is not None for sensor_id in before)
            result.attributed_after += sum(m.sensor_id is not None for m in after)
        if advance is not None:
            advance()
    return result


def _rebuild_one(
    session: Session, transcript_id: int, tolerances: Mapping[str, ReadingTolerance]
) -> tuple[Sequence[int | None], Sequence[Mention]] | None:
    """The sensor ids of the mentions deleted and the mentions written, or None when the
    transcript is gone."""
    # Locked on PostgreSQL before its mentions are: a job saving the transcript again (which
    # deletes it, and its mentions with it) then waits for this transaction instead of
    # deadlocking with it.
    audio_of = (
        select(Transcript.audio_object_id).where(Transcript.id == transcript_id).with_for_update()
    )
    if session.scalar(audio_of) is None:
        return None
    before = session.scalars(
        delete(TranscriptMention)
        .where(TranscriptMention.transcript_id == transcript_id)
        .returning(TranscriptMention.sensor_id)
        .execution_options(synchronize_session=False)
    ).all()
    # Asked again: on SQLite the DELETE is what began the transaction and took the write
    # lock, so only from here on can nothing change under us before the commit.
    audio_id = session.scalar(audio_of)
    if audio_id is None:
        return None
    audio = session.get_one(AudioObject, audio_id)
    segment_ids, segments = stored_segments(session, transcript_id)
    after = save_mentions(session, transcript_id, audio, segments, segment_ids, tolerances)
    return before, after
