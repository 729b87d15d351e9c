"""Short jobs run together: several clips in each of Whisper's 30 s windows.

A worker whose job turns out to be a short clip claims more queued jobs through the database
(:func:`jobs.claim`, the same conditional UPDATE as a lease: no second queue, nothing lost if
the worker dies), fetches them, lays the speech of the short ones end to end in windows
(:mod:`transcriber.packing.plan`), runs the windows through the model side by side with word
timestamps (:func:`transcriber.packing.windows.run_windows`) and gives each clip its own transcript,
saved exactly as if it had run alone: its own transaction, lease check and failure handling.
The claimed jobs' own task messages find them running or done and do nothing.

Why a claim in the database and not ``celery-batches``: the database is where jobs live and
are leased, so a claim needs no second place that could disagree; it takes only jobs that
are really queued (not those a message duplicates, or another worker holds); and Celery's
acknowledgement, retry and time-limit logic stay one message, one task, as everywhere else.

What keeps a bad clip from hurting its neighbours:

- each clip is fetched and decoded on its own; one that fails there fails alone, before any
  window is built;
- a window whose model run raises is run again clip by clip;
- only first attempts are packed: a clip whose worker died (or that timed out) runs alone
  the next time, and so does every clip that shared its window, so a clip that kills its
  worker costs its neighbours one attempt, once;
- a claimed job that turns out too long to share a window is handed back unrun, its attempt
  not counted and its duration recorded so that no worker claims it again; so is one that
  the plan leaves alone in a window (it would cost a whole model run), to share a window of
  a later task.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from transcriber import hallucinations, jobs
from transcriber.config import Settings
from transcriber.errors import TransientError
from transcriber.job_options import TranscribeOptions
from transcriber.job_steps import Fetched, Outcome, fetch, record_audio_facts, save, settle
from transcriber.jobs import publish_after_commit
from transcriber.packing import plan as packing
from transcriber.packing.windows import run_windows, speech
from transcriber.results import Segment, Transcription
from transcriber.speech_model import LoadedModel, repetitive, transcribe

log = logging.getLogger(__name__)

_T = TypeVar("_T")

# Only objects this small are claimed: 2 MiB holds 30 s of 16-bit mono audio at 32 kHz, or 10 s
# of CD-quality stereo. A compressed file this small can be far longer; decoding tells, and
# one that does not fit a window is handed back (see the module's docstring).
CLAIM_MAX_BYTES = 2 * 1024 * 1024
# Claimed jobs fetched at once (download, metadata, decode).
FETCH_THREADS = 4


def packable(fetched: Fetched, loaded: LoadedModel, settings: Settings) -> bool:
    """Whether a fetched clip may share a window: packing on, short enough, one track (not
    ``CHANNELS=split``), and a language known in advance (a multilingual model detecting the
    language would detect one for the whole window)."""
    options = fetched.options
    return (
        settings.pack_max_seconds > 0
        and packing.fits(fetched.duration_s, settings.pack_max_seconds)
        and options.channels == "mix"
        and (options.language is not None or not loaded.multilingual)
    )


def claim_companions(
    engine: Engine, primary: Fetched, loaded: LoadedModel, settings: Settings
) -> list[jobs.Lease]:
    """More queued jobs to run with ``primary``, when it is a first attempt that may share a
    window; none otherwise."""
    if primary.lease.attempt > 1 or not packable(primary, loaded, settings):
        return []
    return jobs.claim(
        engine,
        primary.lease.owner,
        settings.pack_max_clips - 1,
        max_bytes=CLAIM_MAX_BYTES,
        max_seconds=settings.pack_max_seconds - packing.GAP_SECONDS - 1.0,
    )


def run(
    engine: Engine,
    primary: Fetched,
    companions: Sequence[jobs.Lease],
    loaded: LoadedModel,
    settings: Settings,
    publish: jobs.Publish,
    timeout_errors: tuple[type[BaseException], ...] = (),
) -> Outcome:
    """Run ``primary`` (the task's own job, fetched) with ``companions`` (claimed); returns
    the primary's outcome and raises what its own error would raise if it ran alone."""
    state = _Run(engine, primary.lease, publish, timeout_errors)
    leases = [primary.lease, *companions]
    try:
        with jobs.keep_lease(engine, *leases):
            clips = [primary, *state.fetch_companions(companions, settings)]
            # Only clips with the very same options share a window.
            groups: dict[TranscribeOptions, list[Fetched]] = {}
            for clip in clips:
                if packable(clip, loaded, settings):
                    groups.setdefault(clip.options, []).append(clip)
                else:
                    state.alone(clip, loaded)
            for members in groups.values():
                state.pack(members, loaded, settings)
    except timeout_errors:
        state.give_up(leases)
    return state.result()


@dataclass
class _Run:
    """The outcomes of the jobs of one packed run, each recorded on its own job."""

    engine: Engine
    primary: jobs.Lease
    publish: jobs.Publish
    timeout_errors: tuple[type[BaseException], ...]
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    primary_error: Exception | None = None

    def fetch_companions(
        self, companions: Sequence[jobs.Lease], settings: Settings
    ) -> list[Fetched]:
        # Side by side: a fetch mostly waits on S3 and the database, and one after another
        # they took a fifth of a packed run (50 ms a clip against the model's 180).
        pool = ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="fetch")
        try:
            futures = [pool.submit(fetch, self.engine, lease, settings) for lease in companions]
            clips: list[Fetched] = []
            for lease, future in zip(companions, futures, strict=True):
                # Its error, raised here, is recorded on its job as if it had run alone.
                clip = self.attempt(lease, future.result)
                if clip is None:
                    continue
                if packing.fits(clip.duration_s, settings.pack_max_seconds):
                    clips.append(clip)
                else:
                    self.attempt(lease, partial(self.hand_back, clip, "too long to pack"))
            return clips
        finally:
            # A time limit while waiting: start no more fetches (those under way finish).
            pool.shutdown(wait=False, cancel_futures=True)

    def hand_back(self, clip: Fetched, why: str) -> None:
        """Put a claimed job back in the queue unrun, its attempt not counted."""
        with Session(self.engine) as session, session.begin():
            # Its length, so that no worker claims it again when it is too long to pack.
            record_audio_facts(session, clip)
        jobs.unclaim(self.engine, clip.lease)
        job_id = clip.lease.job_id
        log.info("job %s (%.1f s): %s; back in the queue", job_id, clip.duration_s, why)
        self.outcomes[job_id] = "released"
        publish_after_commit(self.publish, [job_id])

    def alone(self, clip: Fetched, loaded: LoadedModel) -> None:
        self.finish(clip, partial(transcribe, clip.audio, clip.options, loaded))

    def pack(self, group: Sequence[Fetched], loaded: LoadedModel, settings: Settings) -> None:
        """Lay out the clips of ``group`` (all with the same options) in windows, and run
        them. A clip that would be alone in its window runs alone if it is the task's own
        job, and goes back to the queue if it was claimed."""
        clips: list[Fetched] = []
        heard: list[packing.Speech] = []
        for clip in group:
            found = self.attempt(clip.lease, partial(speech, clip.audio.channels[0], clip.options))
            if found is None:
                continue
            if not found.duration_s:
                self.alone(clip, loaded)  # no speech: nothing to share a window with
                continue
            clips.append(clip)
            heard.append(found)
        shared: list[packing.Window] = []
        for window in packing.plan([h.duration_s for h in heard], settings.pack_max_seconds):
            (first, *more) = window.clips
            clip = clips[first.index]
            if more:
                shared.append(window)
            elif clip.lease == self.primary:
                self.alone(clip, loaded)
            else:
                # A claimed clip left alone in a window would cost a whole model run: back
                # to the queue, to share a window of a later task.
                self.attempt(clip.lease, partial(self.hand_back, clip, "left alone"))
        self.windows(shared, clips, heard, loaded)

    def windows(
        self,
        windows: Sequence[packing.Window],
        clips: Sequence[Fetched],
        heard: Sequence[packing.Speech],
        loaded: LoadedModel,
    ) -> None:
        """Run ``windows``, each holding two clips or more of ``clips`` (whose speech is
        ``heard``, what the windows were planned from), side by side
        (:func:`run_windows`)."""
        if not windows:
            return
        options = clips[0].options
        # The VAD has cut each clip already; words are what a segment that runs across two
        # clips is cut at.
        model_options = replace(options, vad_filter=False, word_timestamps=True)
        started = time.perf_counter()
        try:
            samples = [packing.join(w, [h.samples for h in heard]) for w in windows]
            results = run_windows(loaded, samples, model_options)
        except self.timeout_errors:
            raise
        except Exception as exc:
            results = [exc] * len(windows)
        seconds = time.perf_counter() - started
        audio_s = sum(placed.duration_s for window in windows for placed in window.clips)
        for window, result in zip(windows, results, strict=True):
            members = [clips[placed.index] for placed in window.clips]
            if isinstance(result, Exception):
                ids = [clip.lease.job_id for clip in members]
                log.error(
                    "jobs %s: their shared window failed; running them one by one",
                    ids,
                    exc_info=result,
                )
                for clip in members:
                    self.alone(clip, loaded)
                continue
            segments, info = result
            given = clip_segments(window, segments, heard)
            # The run's time, shared by audio length: what each clip cost.
            self.save_window(window, members, given, info, seconds / audio_s, loaded)
        log.info(
            "%d clips in %d windows, %.1f s of speech, in %.1f s",
            sum(len(window.clips) for window in windows),
            len(windows),
            audio_s,
            seconds,
        )

    def save_window(
        self,
        window: packing.Window,
        clips: Sequence[Fetched],
        given: dict[int, list[Segment] | str],
        info: Any,
        seconds_per_audio_s: float,
        loaded: LoadedModel,
    ) -> None:
        """Save each clip of ``window`` with its own segments (``given``, by clip index, as
        :func:`clip_segments` gives them), or run it alone."""
        options = clips[0].options
        ids = [clip.lease.job_id for clip in clips]
        for placed, clip in zip(window.clips, clips, strict=True):
            found = given[placed.index]
            if isinstance(found, str):
                log.info("job %s: %s; runs alone", clip.lease.job_id, found)
                self.alone(clip, loaded)
                continue
            if not options.word_timestamps:
                found = [replace(s, words=()) for s in found]
            result = Transcription(
                language=info.language,
                language_probability=info.language_probability,
                duration_s=clip.duration_s,
                segments=tuple(found),
                model=loaded.config.model,
                processing_s=seconds_per_audio_s * placed.duration_s,
                options=options.as_dict()
                | {"packed": {"jobs": ids, "offset_s": round(placed.offset_s, 3)}},
                device=loaded.device,
                compute_type=loaded.compute_type,
            )
            self.finish(clip, result)

    def finish(self, clip: Fetched, result: Transcription | Callable[[], Transcription]) -> None:
        """Save ``clip``'s ``result`` (or what ``result()`` transcribes) as its transcript."""

        def transcribe_and_save() -> bool:
            save(self.engine, clip, result if isinstance(result, Transcription) else result())
            return True

        if self.attempt(clip.lease, transcribe_and_save):
            self.outcomes[clip.lease.job_id] = "succeeded"

    def attempt(self, lease: jobs.Lease, step: Callable[[], _T]) -> _T | None:
        """``step()``, or None when it raised: the job's outcome is then recorded as if it
        had run alone, and a job put back in the queue is published again (the task's own
        job excepted: its error is raised at the end, for Celery's retry)."""
        try:
            return step()
        except self.timeout_errors:
            raise
        except Exception as exc:
            try:
                self.outcomes[lease.job_id] = settle(self.engine, lease, exc, self.timeout_errors)
            except TransientError as raised:
                self.outcomes[lease.job_id] = "released"
                if lease == self.primary:
                    self.primary_error = raised
                else:
                    publish_after_commit(self.publish, [lease.job_id])
            except Exception as raised:  # a bug: the job is failed as internal
                self.outcomes[lease.job_id] = "failed"
                if lease == self.primary:
                    self.primary_error = raised
                else:
                    log.exception("job %s failed", lease.job_id, exc_info=raised)
            return None

    def give_up(self, leases: Sequence[jobs.Lease]) -> None:
        """The time limit struck: every job not done yet goes back to the queue, to run
        alone (its attempt counted), where a clip that is really too slow fails alone."""
        pending = [lease for lease in leases if lease.job_id not in self.outcomes]
        for lease in pending:
            message = "its packed run went over the time limit; runs again alone"
            jobs.release(self.engine, lease, "timeout", message)
            self.outcomes[lease.job_id] = "released"
        log.warning("jobs %s: over the time limit; back in the queue", [x.job_id for x in pending])
        publish_after_commit(self.publish, [lease.job_id for lease in pending])

    def result(self) -> Outcome:
        if self.primary_error is not None:
            raise self.primary_error
        return self.outcomes.get(self.primary.job_id, "skipped")


def clip_segments(
    window: packing.Window, segments: Sequence[Segment], heard: Sequence[packing.Speech]
) -> dict[int, list[Segment] | str]:
    """Each clip of ``window`` (by its index in ``heard``, what each clip put into the
    window) with its own segments of the window's ``segments``, or why it must run alone.

    Per clip, as if it had run alone: what the model said after its speech goes
    (:mod:`transcriber.hallucinations`; with a prompt, the decoder fills the gap after a
    clip with the prompt's phrases), and a clip whose text repeats itself runs alone, where
    faster-whisper would have decoded it again at a higher temperature (the window ran
    without that check: see :func:`transcriber.packing.windows.run_windows`).
    """
    given = packing.split(window, segments, heard)
    out: dict[int, list[Segment] | str] = {}
    for placed in window.clips:
        found = hallucinations.drop_trailing(given.segments[placed.index])
        if placed.index in given.rerun:
            out[placed.index] = "its words in the window are in doubt"
        elif packing.edge_missing(found, heard[placed.index]):
            # What was dropped left the end of its speech unsaid: it was speech after all.
            out[placed.index] = "its last words were taken for words said after its speech"
        elif repetitive(" ".join(segment.text for segment in found)):
            out[placed.index] = "its text repeats itself"
        else:
            out[placed.index] = found
    return out
