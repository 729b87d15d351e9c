"""Memory of a worker over many jobs: one Celery worker with one pool process runs 500 short
voice notes in a row, and the pool process's memory is sampled every 0.1 s.

Its resident memory (RSS) is not a smooth curve: it rises and falls by tens of MB several
times within every job, and the floor it falls back to between jobs steps up now and then
as the allocator settles (the report explains both, with what a finer trace showed). So
besides RSS after job 10 and after the last job, the benchmark compares the *peak* RSS over
a window of early jobs with the peak over the last jobs, as tests/test_faults_load.py does:
the most the process needed, which a leak raises job after job and the swings do not. That
comparison is the one judged; the kernel's high-water mark (``VmHWM``), which also catches
peaks between samples, is reported beside it.
"""

from __future__ import annotations

import time

from tests.bench.corpus import describe, short_clips
from tests.bench.overhead import SERVICE_ENV
from tests.bench.stack import (
    MB,
    MemorySample,
    MemorySampler,
    bench_service,
    start_worker,
    upload,
    wait_finished,
    warm_up,
)

TARGET_GROWTH_MB = 50.0
THREADS = 2


# What a trace of RSS every 5 ms over a few jobs showed during development (a dev script, not
# part of the run: at that rate the sampler would take CPU from the worker it measures).
TRACE = (
    "A trace of the pool process's RSS every 5 ms over six jobs, taken during development, "
    "shows where the swings come from: within every job RSS climbs by about 60 MB and drops "
    "back four times in a row, once for each of tiny.en's four encoder layers, whose "
    "attention scores over the 30 s window (6 heads × 1500 × 1500 float32 = 51.5 MB) are "
    "computed for every clip however short; a block that large comes from the system (mmap) "
    "as it is written and goes back the moment it is freed. Between jobs RSS returns to a "
    "floor, and that floor itself moved: in the sixth job it stepped up by some 60 MB, the "
    "peaks with it, and stayed there, which looks like the allocator keeping freed blocks "
    "for reuse from then on instead of returning them. A single sample thus lands anywhere "
    "between floor and peak, and two of them can differ by 50-90 MB with nothing leaking."
)


def _mb(value: float) -> str:
    return f"{value / MB:.0f} MB"


def run(quick: bool) -> str:
    jobs = 60 if quick else 500
    # Windows of jobs, counted from 1: the early one starts once the process has settled (its
    # floor can still step up some 60 MB within the first tens of jobs, see the report), the
    # late one is the last fifth of the run.
    early = (20, 40) if quick else (50, 150)
    late = (jobs - jobs // 5 + 1, jobs)
    clips = short_clips(jobs, prefix="memory")
    (warm,) = short_clips(1, prefix="warm-up", seed=99)
    with bench_service("memory", **SERVICE_ENV) as service:
        start_worker(service, "worker", concurrency=1, threads=THREADS)
        warm_up(service, "worker", warm, 1)
        (pool,) = service.children("worker")
        sampler = MemorySampler(service, "worker", "memory/")
        started = time.monotonic()
        with sampler.sampling():
            upload(service, clips, threads=4)
            wait_finished(service, [c.key for c in clips], timeout=3600)
            time.sleep(1.0)  # samples after the last job
        wall_s = time.monotonic() - started
        replaced = any(pid != pool.pid for s in sampler.samples for pid in s.rss)
    pid = pool.pid
    samples = [s for s in sampler.samples if pid in s.rss]

    def after(job: int) -> MemorySample:
        """The sample with the least RSS from job ``job``'s commit to the next one's: the
        process between two jobs, comparable from one job to another."""
        between = [s for s in samples if s.finished == job]
        assert between, f"no sample between job {job} and the next"
        return min(between, key=lambda s: s.rss[pid])

    first, last = after(10), after(jobs)
    settled = after(early[1])
    early_rss = [s.rss[pid] for s in sampler.window(*early) if pid in s.rss]
    late_rss = [s.rss[pid] for s in sampler.window(*late) if pid in s.rss]
    growth_point = (last.rss[pid] - first.rss[pid]) / MB
    growth_peak = (max(late_rss) - max(early_rss)) / MB
    growth_hwm = (last.hwm[pid] - settled.hwm[pid]) / MB
    verdict = "meets" if growth_peak < TARGET_GROWTH_MB else "MISSES"
    swing = [max(w) - min(w) for w in (early_rss, late_rss)]
    print(
        f"RSS {_mb(first.rss[pid])} at job 10, {_mb(last.rss[pid])} at job {jobs}; peaks "
        f"{_mb(max(early_rss))} / {_mb(max(late_rss))}",
        flush=True,
    )
    return "\n".join(
        [
            "## Worker memory over many jobs",
            "",
            f"One Celery worker, concurrency 1, {THREADS} CPU threads, tiny.en (int8): "
            f"short voice notes, {describe(clips)}, uploaded at once and run one "
            f"after another in {wall_s:.0f} s, after one warm-up job. The pool process's "
            "memory is sampled every 0.1 s"
            f"{' (Celery replaced it during the run!)' if replaced else ''}. "
            f"Target: it grows by less than {TARGET_GROWTH_MB:.0f} MB.",
            "",
            "| Measure | Early | Late | Growth |",
            "| --- | ---: | ---: | ---: |",
            f"| RSS after job 10 / after job {jobs} | {_mb(first.rss[pid])} | "
            f"{_mb(last.rss[pid])} | {growth_point:+.1f} MB |",
            f"| peak RSS over jobs {early[0]}-{early[1]} / {late[0]}-{late[1]} | "
            f"{_mb(max(early_rss))} | {_mb(max(late_rss))} | {growth_peak:+.1f} MB |",
            f"| lowest RSS over the same windows | {_mb(min(early_rss))} | "
            f"{_mb(min(late_rss))} | {(min(late_rss) - min(early_rss)) / MB:+.1f} MB |",
            f"| high-water mark (`VmHWM`) after job {early[1]} / after job {jobs} | "
            f"{_mb(settled.hwm[pid])} | {_mb(last.hwm[pid])} | {growth_hwm:+.1f} MB |",
            f"| **judged: growth of the peak** | | | **{growth_peak:+.1f} MB ({verdict})** |",
            "",
            f"RSS swings by {swing[0] / MB:.0f} MB within the early window and "
            f"{swing[1] / MB:.0f} MB within the late one ({len(early_rss)} and "
            f"{len(late_rss)} samples). {TRACE} RSS 'after job N' above is therefore the "
            "lowest sample between job N's commit and the next one's (the floor), and the "
            "judged figure compares peaks over windows of many jobs: a leak lifts floor and "
            "peak alike, job after job, while the swings do not add up. RSS after job 10 can "
            "still be below a settled floor, which would show as growth with nothing leaking.",
            "",
            "Reproduce: `make bench` (this section alone, printed: "
            "`python -m tests.bench.run --only memory`).",
        ]
    )
