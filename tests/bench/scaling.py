"""Threads or processes: the same short voice notes through the service with one worker process
of two CTranslate2 threads, and with two processes of one thread each.

On a machine with two cores these are the two ways to use both
(``TRANSCRIBER_WORKER_CONCURRENCY`` × ``TRANSCRIBER_CPU_THREADS`` = 2). The configurations
run in the order A B B A in one stack (A B at quick size), so that a machine that gets
faster or slower during the run weighs on both alike; each worker is started fresh and
warmed up (every pool process has loaded its model and run a job) before its clock starts.
"""

from __future__ import annotations

import time
from contextlib import suppress
from dataclasses import dataclass, replace
from statistics import mean

import psutil

from tests.bench.corpus import Clip, describe, short_clips, total_seconds
from tests.bench.overhead import SERVICE_ENV
from tests.bench.stack import MB, bench_service, start_worker, upload, wait_finished, warm_up
from tests.support.service import Service

CONFIGS = {"A": (1, 2), "B": (2, 1)}  # name: (pool processes, CPU threads each)


@dataclass(frozen=True)
class Result:
    config: str
    wall_s: float
    pool_cpu_s: float
    pool_rss: int  # bytes, all pool processes together, after the run


def _pool_cpu(service: Service, name: str) -> float:
    total = 0.0
    for child in service.children(name):
        try:
            times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _pool_rss(service: Service, name: str) -> int:
    total = 0
    for child in service.children(name):
        with suppress(psutil.NoSuchProcess):
            total += child.memory_info().rss
    return total


def _one(service: Service, config: str, round_: int, clips: list[Clip], warm: Clip) -> Result:
    processes, threads = CONFIGS[config]
    name = f"worker-{config}{round_}"
    start_worker(service, name, concurrency=processes, threads=threads)
    warm_up(service, name, warm, processes)
    batch = [replace(c, key=f"{config}{round_}/{c.key.split('/', 1)[1]}") for c in clips]
    cpu = _pool_cpu(service, name)
    started = time.time()
    upload(service, batch, threads=4)
    rows = wait_finished(service, [c.key for c in batch], timeout=3600)
    wall_s = max(r.finished_at or 0.0 for r in rows.values()) - started
    result = Result(config, wall_s, _pool_cpu(service, name) - cpu, _pool_rss(service, name))
    service.stop(name)
    return result


def run(quick: bool) -> str:
    count = 30 if quick else 40
    order = "AB" if quick else "ABBA"
    clips = short_clips(count, prefix="clips")
    (warm,) = short_clips(1, prefix="warm-up", seed=99)
    audio_s = total_seconds(clips)
    results: list[Result] = []
    with bench_service("scaling", **SERVICE_ENV) as service:
        for round_, config in enumerate(order, start=1):
            result = _one(service, config, round_, clips, warm)
            results.append(result)
            print(f"{config}: {audio_s / result.wall_s:.2f} audio s/s", flush=True)
    rows = []
    rates: dict[str, float] = {}
    cores: dict[str, float] = {}
    memory: dict[str, float] = {}
    for config, (processes, threads) in CONFIGS.items():
        mine = [r for r in results if r.config == config]
        wall = mean(r.wall_s for r in mine)
        rates[config] = audio_s / wall
        cores[config] = mean(r.pool_cpu_s / r.wall_s for r in mine)
        memory[config] = mean(r.pool_rss for r in mine) / MB
        runs = ", ".join(f"{r.wall_s:.1f}" for r in mine)
        rows.append(
            f"| {config}: {processes} process{'es' if processes > 1 else ''} × {threads} "
            f"thread{'s' if threads > 1 else ''} | {runs} s | {count / wall:.2f} | "
            f"{rates[config]:.2f} | {mean(r.pool_cpu_s for r in mine) / count:.3f} s | "
            f"{cores[config]:.2f} | {memory[config]:.0f} MB |"
        )
    faster, slower = sorted(rates, key=rates.__getitem__, reverse=True)
    gain = rates[faster] / rates[slower] - 1
    measured = (
        f"The pool kept {cores['A']:.2f} cores busy on average as one process of two threads "
        f"and {cores['B']:.2f} as two processes of one thread; two processes hold "
        f"{memory['B'] - memory['A']:.0f} MB more."
    )
    if gain < 0.05:
        conclusion = (
            f"**Within {gain:.0%} of each other**, inside this machine's noise. {measured} "
            "One process with both threads gives the same throughput for less memory."
        )
    elif faster == "B":
        conclusion = (
            f"**Two processes of one thread are {gain:.0%} faster here.** {measured} Much of "
            "a short note's job is work that one thread does alone whatever the setting: "
            "decoding the file, the VAD (faster-whisper runs it on one thread), the "
            "decoder's small beam-search steps, the Python between them and the database. "
            "With one process the second core has little to do through all of that; with "
            "two, each core has a job of its own. (Fewer than two cores busy means that "
            "other work shared the machine.) On "
            "this machine set `TRANSCRIBER_WORKER_CONCURRENCY` to the number of cores and "
            "leave `TRANSCRIBER_CPU_THREADS=0`, which then gives each process one thread, "
            "where the memory allows."
        )
    else:
        conclusion = (
            f"**One process of two threads is {gain:.0%} faster here.** {measured} CTranslate2 "
            "spreads each job over both cores well enough that a second process only adds a "
            "second copy of the model."
        )
    return "\n".join(
        [
            "## Worker processes or threads (two cores)",
            "",
            f"Short voice notes, {describe(clips)}, uploaded at once through the whole "
            "service (moto S3 → SQS → watcher → Redis → Celery → PostgreSQL), tiny.en int8, "
            "beam 5, VAD and word timestamps on; a fresh worker for each run, warmed up "
            "(each pool process has run a job) before its clock starts. Wall time from the "
            f"first PUT to the last commit; runs in the order {' '.join(order)}, so that a "
            "machine getting faster or slower during the run weighs on both alike.",
            "",
            "| Worker | Wall time per run | Files per s | Audio s per s | Pool CPU per file "
            "| Cores busy | Pool RSS |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
            *rows,
            "",
            conclusion,
            "",
            "Reproduce: `make bench` (this section alone, printed: "
            "`python -m tests.bench.run --only scaling`).",
        ]
    )
