"""Promise L (and P1 at volume): 500 short voice notes through the whole service, the watcher
and one Celery worker with two pool processes, on PostgreSQL and Redis.

Every file ends with exactly one succeeded job and one transcript, and the pool processes'
resident memory is sampled throughout: a leak per job (a model, a decoded file or a session
kept alive) shows as growth between the early jobs and the last ones.
"""

from __future__ import annotations

import io
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import soundfile

from tests.support.service import DATA, Service, service_fixture
from transcriber.storage import s3_client

FILES = 500
RATE = 16_000
MB = 1024 * 1024
# How memory is judged. A pool process's RSS is not a smooth curve: from one job to the next
# it swings by ~50 MB (between about 280 and 430 MB with tiny.en here) as CTranslate2 and
# the allocator take and give back buffers, and its usual peak shows only once some job has
# needed it, which took one process of a run 75 jobs. So the test compares each process's
# *peak* RSS (the most it needed) over an early window, once warm, with its peak over its
# last jobs. The windows' middles are ~275 jobs of the worker apart, ~135 of each process:
# a model loaded per job (~75 MB for tiny.en) trips the bound at once, and a trial run with
# a deliberate leak of 1 MB per job grew the two processes' peaks by 76 and 134 MB, against
# -25 and 0 MB without it. Smaller leaks hide in the swings; only a longer run would show them.
EARLY_WINDOW = (100, 250)  # jobs done by the whole worker, counted from the process's birth
LATE_WINDOW = 100  # the last jobs of the process's life
MAX_GROWTH_MB = 100
# Sampling period of the memory sampler (and of its job counts).
SAMPLE_S = 0.5


def _sentences() -> list[np.ndarray]:
    """The three test sentences (A, B, C; tests/data/README.md) as 16 kHz mono float32; C is
    the right channel of the two-party recording, from where B's silence there ends."""
    a, _ = soundfile.read(DATA / "speech_16k_mono.wav", dtype="float32")
    b, _ = soundfile.read(DATA / "speech_16k_mono.ogg", dtype="float32")
    two, _ = soundfile.read(DATA / "two_party_stereo.wav", dtype="float32")
    c = two[int(4.5 * RATE) :, 1]
    return [a, b, c]


def _clips(count: int, seed: int = 6) -> list[tuple[str, bytes, float]]:
    """``count`` notes of 1-3 s cut from the sentences at random places and loudness, as
    WAV, FLAC and Ogg Vorbis in turn: (key, bytes, seconds)."""
    rng = np.random.default_rng(seed)
    sentences = _sentences()
    formats = [("wav", "WAV", "PCM_16"), ("flac", "FLAC", "PCM_16"), ("ogg", "OGG", "VORBIS")]
    clips = []
    for n in range(count):
        speech = sentences[n % len(sentences)]
        seconds = float(rng.uniform(1.0, 3.0))
        length = int(seconds * RATE)
        start = int(rng.integers(0, max(1, len(speech) - length)))
        samples = speech[start : start + length] * float(rng.uniform(0.4, 1.0))
        ext, container, subtype = formats[n % len(formats)]
        buffer = io.BytesIO()
        soundfile.write(buffer, samples, RATE, format=container, subtype=subtype)
        clips.append((f"load/{n:04d}.{ext}", buffer.getvalue(), len(samples) / RATE))
    return clips


@dataclass
class _Sample:
    t: float
    registered: int
    finished: int
    rss: dict[int, int]


@dataclass
class _Sampler:
    """Samples, every ``SAMPLE_S``, how many jobs exist and have finished, and the resident
    memory of each pool process of worker ``name``; a child that Celery replaced shows up
    under its own pid."""

    service: Service
    name: str = "worker"
    samples: list[_Sample] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.wait(SAMPLE_S):
            (row,) = self.service.query(
                "SELECT count(*) AS registered, count(*) FILTER (WHERE status NOT IN "
                "('queued', 'running')) AS finished FROM transcription_jobs"
            )
            rss = {}
            for child in self.service.children(self.name):
                try:
                    rss[child.pid] = child.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
            self.samples.append(_Sample(time.monotonic(), row.registered, row.finished, rss))

    def write_csv(self, path: Path, started: float) -> None:
        """The samples, one row per process and sample, to look at after a failure."""
        rows = ["seconds,registered,finished,pid,rss_mb"]
        for s in self.samples:
            rows += [
                f"{s.t - started:.1f},{s.registered},{s.finished},{pid},{rss / MB:.1f}"
                for pid, rss in sorted(s.rss.items())
            ]
        path.write_text("\n".join(rows) + "\n")

    def rss_at(self, finished: int) -> dict[int, int]:
        """Each child's RSS at the first sample with ``finished`` jobs done."""
        return next((s.rss for s in self.samples if s.finished >= finished), {})

    def peak_growth(self) -> dict[int, tuple[int, int]]:
        """Per process: (peak RSS in ``EARLY_WINDOW``, peak RSS in its last ``LATE_WINDOW``
        jobs). Windows count from the process's first sample, so a replacement child is
        judged on its own life; one that lived too short for both windows is left out."""
        lives: dict[int, list[_Sample]] = {}
        for sample in self.samples:
            for pid in sample.rss:
                lives.setdefault(pid, []).append(sample)
        peaks = {}
        for pid, life in lives.items():
            born, died = life[0].finished, life[-1].finished
            early = [
                s.rss[pid]
                for s in life
                if born + EARLY_WINDOW[0] <= s.finished < born + EARLY_WINDOW[1]
            ]
            late_from = max(died - LATE_WINDOW, born + EARLY_WINDOW[1])
            late = [s.rss[pid] for s in life if s.finished >= late_from]
            if early and late and died - born > EARLY_WINDOW[1] + LATE_WINDOW:
                peaks[pid] = (max(early), max(late))
        return peaks


@contextmanager
def _sampling(service: Service) -> Iterator[_Sampler]:
    sampler = _Sampler(service)
    thread = threading.Thread(target=sampler.run, name="rss-sampler", daemon=True)
    thread.start()
    try:
        yield sampler
    finally:
        sampler.stop.set()
        thread.join()


service = service_fixture("faults-load", scope="function", concurrency=2)


def _wait_for_pool(service: Service, size: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = service.workdir / "worker.log"
        if len(service.children("worker")) == size and "ready." in log.read_text():
            return
        time.sleep(0.5)
    raise AssertionError(f"the worker did not start {size} pool processes\n{service.logs()}")


@pytest.mark.fault("L", "P1")
def test_500_files_two_processes_one_transcript_each_and_bounded_memory(
    service: Service, figures: dict[str, Any]
) -> None:
    """500 notes of 1-3 s (WAV, FLAC, Ogg) are uploaded at once by 8 threads; the watcher and
    one worker with two pool processes turn them into exactly 500 succeeded jobs and 500
    transcripts, each job run once, the database sound; each pool process's RSS grows by
    less than MAX_GROWTH_MB between its early jobs and its last ones (peak against peak),
    and the workers never starve for want of registered jobs."""
    clips = _clips(FILES)
    audio_s = sum(seconds for _, _, seconds in clips)
    _wait_for_pool(service, 2)
    s3 = s3_client(service.settings)
    bucket = service.settings.s3_bucket
    started = time.monotonic()
    with _sampling(service) as sampler:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda c: s3.put_object(Bucket=bucket, Key=c[0], Body=c[1]), clips))
        uploaded_s = time.monotonic() - started
        service.wait_for(f"{FILES} jobs to finish", service.finished("load/", FILES), 1500)
        wall_s = time.monotonic() - started

    sampler.write_csv(service.workdir / "rss.csv", started)
    statuses = dict(service.query("SELECT status, count(*) FROM transcription_jobs GROUP BY 1"))
    (counts,) = service.query(
        "SELECT (SELECT count(DISTINCT key) FROM audio_objects) AS keys, "
        "(SELECT count(*) FROM audio_objects) AS objects, "
        "(SELECT count(*) FROM transcripts) AS transcripts, "
        "(SELECT count(DISTINCT job_id) FROM transcripts) AS jobs_transcribed, "
        "(SELECT max(attempts) FROM transcription_jobs) AS max_attempts, "
        "(SELECT count(*) FROM transcripts WHERE text <> '') AS with_text"
    )
    # Which pool process saved each job (one task may run many: short clips are packed);
    # the save's own log line names it.
    per_process = Counter(
        re.findall(
            r"/(ForkPoolWorker-\d+)\] job \d+: \d+ segments from",
            (service.workdir / "worker.log").read_text(),
        )
    )
    samples = sampler.samples
    registered_at = next((s.t - started for s in samples if s.registered >= FILES), wall_s)
    # Samples at which fewer jobs were waiting or running than there are processes, after
    # the first had finished and before the last was registered: a process had nothing to do
    # because the watcher (or the upload) had not got that far.
    starved = [
        s
        for s in samples
        if s.finished > 0 and s.registered < FILES and s.registered - s.finished < 2
    ]
    peaks = sampler.peak_growth()
    growth = {pid: (late - early) / MB for pid, (early, late) in peaks.items()}
    at_20, at_end = sampler.rss_at(20), samples[-1].rss if samples else {}

    def rss_mb(rss: dict[int, int]) -> str:
        return ", ".join(f"{value / MB:.0f}" for _, value in sorted(rss.items()))

    # Recorded before the checks, so that a failing run still reports what it measured.
    figures["files"] = FILES
    figures["audio (s)"] = round(audio_s, 1)
    figures["wall time (s)"] = round(wall_s, 1)
    figures["throughput (files/s)"] = round(FILES / wall_s, 2)
    figures["throughput (audio s/s)"] = round(audio_s / wall_s, 2)
    figures["uploads done at (s)"] = round(uploaded_s, 1)
    figures["all registered at (s)"] = round(registered_at, 1)
    figures["samples with a process starved"] = len(starved)
    figures["jobs per process"] = ", ".join(f"{v}" for _, v in sorted(per_process.items()))
    figures["pool processes seen"] = len({pid for s in samples for pid in s.rss})
    figures["RSS per process at job 10 (MB)"] = rss_mb(sampler.rss_at(10))
    figures["RSS per process at job 20 (MB)"] = rss_mb(at_20)
    figures["RSS per process at the end (MB)"] = rss_mb(at_end)
    figures["RSS change job 20 to end (MB)"] = ", ".join(
        f"{(at_end[pid] - at_20[pid]) / MB:+.0f}" for pid in sorted(at_20) if pid in at_end
    )
    figures["peak RSS early / late per process (MB)"] = ", ".join(
        f"{early / MB:.0f} / {late / MB:.0f}" for _, (early, late) in sorted(peaks.items())
    )
    figures["peak RSS growth per process (MB)"] = ", ".join(
        f"{g:+.1f}" for _, g in sorted(growth.items())
    )
    figures["max RSS of a process (MB)"] = round(
        max((v for s in samples for v in s.rss.values()), default=0) / MB, 1
    )

    assert statuses == {"succeeded": FILES}
    assert (counts.keys, counts.objects) == (FILES, FILES)
    assert (counts.transcripts, counts.jobs_transcribed) == (FILES, FILES)
    assert counts.max_attempts == 1, "a job ran twice"
    assert service.integrity_problems() == []
    # Every clip holds a second or more of speech: empty transcripts would mean lost audio.
    assert counts.with_text >= FILES * 0.95, counts

    assert sum(per_process.values()) == FILES
    assert len(per_process) >= 2, per_process
    assert min(per_process.values()) >= FILES // 5, per_process

    assert starved == [], f"the processes waited for registrations at {len(starved)} samples"

    assert len(growth) >= 2, f"too few samples of the pool processes: {samples[-3:]}"
    assert max(growth.values()) < MAX_GROWTH_MB, growth
