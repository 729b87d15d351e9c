"""What the service costs over bare faster-whisper: the same corpus, model, options and threads
through both, side by side in one run.

- **Bare**: one Python process (a subprocess of the benchmark, importing faster-whisper and
  little else) with a ``WhisperModel`` on the bundled tiny.en directory, decoding each file
  with ``faster_whisper.decode_audio`` and consuming the segment generator.
- **Service**: moto S3 → SQS → ``transcriber watch`` → Redis → one Celery worker with one pool
  process → PostgreSQL. The clips are uploaded at once (4 PUTs at a time) and the wall time
  runs from the first PUT to the last transcript's commit: the throughput a backlog sees.

Other work on a shared two-core machine moves wall times by tens of percent within a minute,
so the two sides take turns: the corpus is cut into rounds, and each round runs bare and
service on the same clips back to back, bare first in odd rounds and service first in even
ones. Then a few clips are uploaded one at a time, each once the one before is queryable, for
the latency of a clip that finds the queue empty.

Both load the model before the clock starts and run one warm-up clip (the worker loads its
model lazily on its first job; model loading is timed in the first-run benchmark). Same
model path, ``compute_type`` int8, ``cpu_threads``, beam size, VAD, word timestamps and
language; the transcripts are compared clip by clip to show that both did the same work.
"""

from __future__ import annotations

import gc
import itertools
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import median
from typing import TYPE_CHECKING, Any

import psutil

from tests.bench.corpus import Clip, describe, mixed_corpus, total_seconds

# This module is also the bare side's program (python -m tests.bench.overhead SPEC OUT), so
# it imports nothing of the service at the top: the stack's modules come in inside the
# functions that run the service. A "bare" process that had imported SQLAlchemy, boto3, moto
# and pytest would hold some 140,000 objects, and every decode_audio ends with a garbage
# collection that walks them all: the very cost the worker used to pay (see the end of the
# report), which would make bare look slower than it is.
if TYPE_CHECKING:
    from tests.bench.stack import JobRow
    from tests.support.service import Service

TARGET_RATIO = 0.95
THREADS = 2  # the machine's cores: one process with every core is what "bare" would run
BEAM_SIZE = 5
LANGUAGE = "en"
UPLOAD_THREADS = 4
# What the service runs with, spelled out so that a change of a default cannot make the two
# sides differ unnoticed.
SERVICE_ENV = {
    "TRANSCRIBER_MODEL": "tiny.en",
    "TRANSCRIBER_DEVICE": "cpu",
    "TRANSCRIBER_COMPUTE_TYPE": "int8",
    "TRANSCRIBER_BEAM_SIZE": str(BEAM_SIZE),
    "TRANSCRIBER_VAD_FILTER": "true",
    "TRANSCRIBER_WORD_TIMESTAMPS": "true",
    "TRANSCRIBER_LANGUAGE": LANGUAGE,
    "TRANSCRIBER_CHANNELS": "mix",
    # One file, one model run, as bare faster-whisper does it: packing short clips into
    # shared windows has a benchmark of its own (tests/bench/packing.py).
    "TRANSCRIBER_PACK_MAX_SECONDS": "0",
}


# --- Bare faster-whisper (runs in a subprocess: python -m tests.bench.overhead SPEC OUT) ------


def _bare_main(spec_path: str, out_path: str) -> None:
    from faster_whisper import WhisperModel, decode_audio

    spec = json.loads(Path(spec_path).read_text())
    started = time.perf_counter()
    model = WhisperModel(
        spec["model_path"],
        device="cpu",
        compute_type="int8",
        cpu_threads=spec["threads"],
        local_files_only=True,
    )
    load_s = time.perf_counter() - started

    def one(path: str) -> dict[str, Any]:
        began = time.perf_counter()
        audio = decode_audio(path)
        decoded = time.perf_counter()
        segments, _info = model.transcribe(
            audio,
            language=spec["language"],
            beam_size=spec["beam_size"],
            vad_filter=True,
            word_timestamps=True,
        )
        texts = [s.text.strip() for s in segments]  # the generator does the work
        return {
            "decode_s": decoded - began,
            "transcribe_s": time.perf_counter() - decoded,
            "text": " ".join(t for t in texts if t),
        }

    one(spec["warm_up"])
    cpu = psutil.Process().cpu_times()
    began = time.perf_counter()
    files = [one(path) for path in spec["files"]]
    wall_s = time.perf_counter() - began
    after = psutil.Process().cpu_times()
    cpu_s = after.user + after.system - cpu.user - cpu.system
    result = {
        "load_s": load_s,
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "objects": len(gc.get_objects()),
        "files": files,
    }
    Path(out_path).write_text(json.dumps(result))


@dataclass(frozen=True)
class BarePass:
    wall_s: float
    cpu_s: float
    load_s: float
    objects: int
    decode_s: list[float]
    transcribe_s: list[float]
    texts: list[str]


def _bare_pass(scratch: Path, paths: list[Path], warm: Path, label: str) -> BarePass:
    from transcriber.model_files import resolve  # the service's own registry: the same directory

    spec = scratch / f"bare-{label}.json"
    out = scratch / f"bare-{label}-out.json"
    spec.write_text(
        json.dumps(
            {
                "files": [str(p) for p in paths],
                "warm_up": str(warm),
                "threads": THREADS,
                "language": LANGUAGE,
                "beam_size": BEAM_SIZE,
                "model_path": resolve("tiny.en", scratch / "models"),
            }
        )
    )
    subprocess.run(
        [sys.executable, "-m", "tests.bench.overhead", str(spec), str(out)],
        check=True,
        cwd=Path(__file__).parents[2],
    )
    data = json.loads(out.read_text())
    files = data["files"]
    return BarePass(
        data["wall_s"],
        data["cpu_s"],
        data["load_s"],
        data["objects"],
        [f["decode_s"] for f in files],
        [f["transcribe_s"] for f in files],
        [f["text"] for f in files],
    )


# --- The service --------------------------------------------------------------------------


@dataclass(frozen=True)
class Burst:
    """Clips uploaded at once: when the first PUT started, when each returned, the jobs, and
    the CPU seconds each part of the stack used meanwhile."""

    started: float
    uploaded: dict[str, float]
    rows: dict[str, JobRow]
    cpu_s: dict[str, float]

    @property
    def wall_s(self) -> float:
        return max(r.finished_at or 0.0 for r in self.rows.values()) - self.started


def _cpu_seconds(service: Service) -> dict[str, dict[int, float]]:
    """CPU seconds used so far by each process of each part of the stack (PostgreSQL: every
    backend on the machine, so other users of the server count too)."""
    parts: dict[str, list[psutil.Process]] = {
        "worker pool process": service.children("worker"),
        "worker main process": [psutil.Process(service.processes["worker"].pid)],
        "watcher": [psutil.Process(service.processes["watch"].pid)],
        "benchmark (moto S3+SQS, uploads)": [psutil.Process()],
        "PostgreSQL": [p for p in psutil.process_iter(["name"]) if p.info["name"] == "postgres"],
    }
    seconds: dict[str, dict[int, float]] = {}
    for part, processes in parts.items():
        seconds[part] = {}
        for process in processes:
            try:
                times = process.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            seconds[part][process.pid] = times.user + times.system
    return seconds


def _cpu_used(
    before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]
) -> dict[str, float]:
    """CPU seconds per part between two readings; a process that ended in between is missed
    (a short-lived PostgreSQL backend), one that started is counted from its start."""
    return {
        part: sum(s - before[part].get(pid, 0.0) for pid, s in after[part].items())
        for part in after
    }


def _burst(service: Service, clips: list[Clip]) -> Burst:
    from tests.bench.stack import upload, wait_finished

    before = _cpu_seconds(service)
    started = time.time()
    uploaded = upload(service, clips, UPLOAD_THREADS)
    rows = wait_finished(service, [c.key for c in clips], timeout=1800)
    return Burst(started, uploaded, rows, _cpu_used(before, _cpu_seconds(service)))


@dataclass(frozen=True)
class Round:
    clips: list[Clip]
    bare_first: bool
    bare: BarePass
    service: Burst

    @property
    def audio_s(self) -> float:
        return total_seconds(self.clips)


@dataclass(frozen=True)
class Measured:
    rounds: list[Round]
    paced: Burst
    compute_type: str


def _measure(rounds: list[list[Clip]], paced: list[Clip], warm: Clip, scratch: Path) -> Measured:
    from tests.bench.stack import bench_service, start_worker, upload, wait_finished, warm_up

    warm_path = warm.write(scratch)
    done: list[Round] = []
    with bench_service("overhead", **SERVICE_ENV) as service:
        start_worker(service, "worker", concurrency=1, threads=THREADS)
        warm_up(service, "worker", warm, 1)
        for number, clips in enumerate(rounds, start=1):
            paths = [clip.write(scratch) for clip in clips]
            bare_first = number % 2 == 1
            if bare_first:
                bare = _bare_pass(scratch, paths, warm_path, str(number))
                burst = _burst(service, clips)
            else:
                burst = _burst(service, clips)
                bare = _bare_pass(scratch, paths, warm_path, str(number))
            done.append(Round(clips, bare_first, bare, burst))
            audio_s = total_seconds(clips)
            print(
                f"round {number}: bare {audio_s / bare.wall_s:.2f}, service "
                f"{audio_s / burst.wall_s:.2f} audio s/s",
                flush=True,
            )
        uploaded: dict[str, float] = {}
        rows: dict[str, JobRow] = {}
        started = time.time()
        for clip in paced:
            uploaded.update(upload(service, [clip]))
            rows.update(wait_finished(service, [clip.key], timeout=300, poll_s=0.1))
        (compute_type,) = service.query(
            "SELECT DISTINCT compute_type FROM transcription_jobs WHERE compute_type IS NOT NULL"
        )
    return Measured(done, Burst(started, uploaded, rows, {}), str(compute_type[0]))


# --- The report ----------------------------------------------------------------------------


def _seconds(values: list[float]) -> str:
    from tests.bench.stack import percentile

    return f"{percentile(values, 50):.2f} / {percentile(values, 95):.2f} s"


def run(quick: bool) -> str:
    count, per_round = (8, 4) if quick else (60, 10)
    paced_count = 4 if quick else 10
    clips = mixed_corpus(count, prefix="overhead")
    rounds = [clips[i : i + per_round] for i in range(0, count, per_round)]
    # The paced clips are the first of the corpus again, under keys of their own.
    paced = [replace(c, key=f"paced/{c.key.split('/', 1)[1]}") for c in clips[:paced_count]]
    (warm,) = mixed_corpus(1, prefix="warm-up", seed=99, min_s=5, max_s=5)
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as scratch:
        measured = _measure(rounds, paced, warm, Path(scratch))
    return _report(clips, measured)


def _report(clips: list[Clip], measured: Measured) -> str:
    rounds = measured.rounds
    audio_s = total_seconds(clips)
    bare_wall = sum(r.bare.wall_s for r in rounds)
    service_wall = sum(r.service.wall_s for r in rounds)
    bare_rate, service_rate = audio_s / bare_wall, audio_s / service_wall
    ratio = service_rate / bare_rate
    verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
    round_rows = [
        f"| {n} ({'bare' if r.bare_first else 'service'} first) | {len(r.clips)} | "
        f"{r.audio_s:.0f} s | {r.bare.wall_s:.1f} s / {r.audio_s / r.bare.wall_s:.2f} | "
        f"{r.service.wall_s:.1f} s / {r.audio_s / r.service.wall_s:.2f} | "
        f"{r.bare.wall_s / r.service.wall_s:.3f} |"
        for n, r in enumerate(rounds, start=1)
    ]
    cpu: dict[str, float] = {}
    for r in rounds:
        for part, seconds in r.service.cpu_s.items():
            cpu[part] = cpu.get(part, 0.0) + seconds
    bare_cpu = sum(r.bare.cpu_s for r in rounds)
    pool_cpu = cpu["worker pool process"]

    # Where the service's wall time went: per job in the worker (lease taken to commit) the
    # model's share (transcripts.processing_s) and the rest (download, decode, options,
    # writing the rows); between jobs of a round, the hand-over (ack, next message, lease).
    jobs = [sorted(r.service.rows.values(), key=lambda row: row.started_at or 0.0) for r in rounds]
    rows = [row for round_jobs in jobs for row in round_jobs]
    model_s = [row.processing_s or 0.0 for row in rows]
    outside = [
        (row.finished_at or 0.0) - (row.started_at or 0.0) - (row.processing_s or 0.0)
        for row in rows
    ]
    gaps = [
        (b.started_at or 0.0) - (a.finished_at or 0.0)
        for round_jobs in jobs
        for a, b in itertools.pairwise(round_jobs)
    ]
    first_lease = [
        (round_jobs[0].started_at or 0.0) - r.service.started
        for r, round_jobs in zip(rounds, jobs, strict=True)
    ]
    bare_decode = [s for r in rounds for s in r.bare.decode_s]
    bare_model = [s for r in rounds for s in r.bare.transcribe_s]
    same = sum(
        (r.service.rows[c.key].text or "") == text
        for r in rounds
        for c, text in zip(r.clips, r.bare.texts, strict=True)
    )
    objects = max(r.bare.objects for r in rounds)

    paced = [measured.paced.rows[key] for key in measured.paced.uploaded]
    uploaded = measured.paced.uploaded
    latency = [(r.finished_at or 0.0) - uploaded[r.key] for r in paced]
    to_registered = [r.queued_at - uploaded[r.key] for r in paced]
    to_leased = [(r.started_at or 0.0) - r.queued_at for r in paced]
    working = [(r.finished_at or 0.0) - (r.started_at or 0.0) for r in paced]
    burst_latency = [
        (row.finished_at or 0.0) - r.service.uploaded[row.key]
        for r in rounds
        for row in r.service.rows.values()
    ]
    paced_audio = [c.seconds for c in clips[: len(paced)]]

    lines = [
        "## Service overhead over bare faster-whisper",
        "",
        f"Corpus: {describe(clips)}; made at run time from the test sentences (seed 7). "
        f"Model tiny.en (bundled), {measured.compute_type}, {THREADS} CPU threads, beam "
        f"{BEAM_SIZE}, VAD on, word timestamps on, language `{LANGUAGE}`, on both sides. "
        "Bare: one process, `decode_audio` + `WhisperModel.transcribe`. Service: the clips "
        "uploaded at once to moto S3 → SQS → `transcriber watch` → Redis → one Celery worker "
        "(concurrency 1) → PostgreSQL; wall time from the first PUT to the commit of the last "
        "transcript. Both warmed up (model loaded, one clip run) before timing. The two take "
        f"turns in {len(rounds)} rounds on the same clips, so that other load on the machine "
        "weighs on both alike. "
        f"Target: the service at ≥ {TARGET_RATIO:.0%} of bare throughput.",
        "",
        "| Round | Clips | Audio | Bare: wall / audio s per s | Service: wall / audio s per s "
        "| Service / bare |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *round_rows,
        f"| **all** | {len(clips)} | {audio_s:.0f} s | {bare_wall:.1f} s / {bare_rate:.2f} | "
        f"{service_wall:.1f} s / {service_rate:.2f} | **{ratio:.3f} ({verdict})** |",
        "",
        f"CPU time: bare {bare_cpu:.1f} s; service {pool_cpu:.1f} s in the pool process, "
        f"{sum(cpu.values()):.1f} s in the whole stack (below); bare / pool process "
        f"{bare_cpu / pool_cpu:.3f}. Other load on the machine moves CPU times less than wall "
        f"times. Same transcript text on both sides: {same} of {len(clips)} clips. The bare "
        f"process held {objects:,} objects that the garbage collector tracks (faster-whisper, "
        "the model and little else).",
        "",
        "Where the time went (medians per job; totals over all rounds):",
        "",
        "| Part | Per job | Total |",
        "| --- | ---: | ---: |",
        "| service: first PUT → first job leased (upload, SQS, watcher, Celery), per round | "
        f"{median(first_lease):.2f} s | {sum(first_lease):.1f} s |",
        f"| service: model (`transcripts.processing_s`) | {median(model_s):.3f} s | "
        f"{sum(model_s):.1f} s |",
        "| service: the rest of the job (download, decode, options, rows, commit) | "
        f"{median(outside):.3f} s | {sum(outside):.1f} s |",
        "| service: between jobs (ack, next message, lease) | "
        f"{median(gaps) if gaps else 0.0:.3f} s | {sum(gaps):.1f} s |",
        f"| bare: `decode_audio` | {median(bare_decode):.3f} s | {sum(bare_decode):.1f} s |",
        f"| bare: `WhisperModel.transcribe`, generator consumed | {median(bare_model):.3f} s | "
        f"{sum(bare_model):.1f} s |",
        "",
        "CPU time of each part of the stack during the service's rounds:",
        "",
        "| Process | CPU time |",
        "| --- | ---: |",
        *[f"| {part} | {seconds:.1f} s |" for part, seconds in cpu.items()],
        "",
        f"**Latency, upload to queryable.** Paced: {len(paced)} clips of the corpus "
        f"({min(paced_audio):.0f}-{max(paced_audio):.0f} s of audio) uploaded one at a time, "
        "each once the one before is queryable, so every clip finds the queue empty: the "
        "latency a clip sees on an idle service. Burst: the same measure for the clips of the "
        "rounds above, where it is mostly time spent waiting behind the others (the "
        "throughput is the figure to read there). Measured from the PUT's response to the "
        "job's `finished_at`, which the worker stamps in the transaction that writes the "
        "transcript.",
        "",
        "| | p50 / p95 |",
        "| --- | ---: |",
        f"| paced: upload → queryable | {_seconds(latency)} |",
        f"| paced: upload → registered by the watcher | {_seconds(to_registered)} |",
        f"| paced: registered → leased by the worker | {_seconds(to_leased)} |",
        f"| paced: leased → committed (download, decode, model, rows) | {_seconds(working)} |",
        f"| burst: upload → queryable | {_seconds(burst_latency)} |",
        "",
        FIXED,
        "",
        "Reproduce: `make bench` (this section alone, printed: "
        "`python -m tests.bench.run --only overhead`).",
    ]
    return "\n".join(lines)


# What profiling found and what was fixed, with the figures measured then: they cannot come
# from a later run, which measures only the fixed code.
FIXED = (
    "**Fixed on the way (issue 7).** The first measurements had the service at 0.90 of bare, "
    "its worker spending 0.22-0.25 s per job outside the model where bare's `decode_audio` "
    "took 0.04-0.06 s. py-spy on the pool process over 40 short notes put 78 % of its main "
    "thread's busy samples on one line: the full garbage collection that ends every decode "
    "(`transcriber/audio.py`, for PyAV's resampler, faster-whisper issue #390), which in a "
    "Celery worker walks some 150,000 long-lived objects (Celery, kombu, SQLAlchemy, "
    "botocore's service models), four times what a bare faster-whisper process holds. A "
    "process now freezes its heap once its model is loaded (`gc.freeze()` in "
    "`transcriber/speech_model.py`), so that each collection walks only what the jobs create. "
    "Before → after, measured during development on this machine with other load on it, at "
    "quick size (8 clips of this corpus in 2 rounds): service / bare 0.898 → 1.048 and 0.992 "
    "(two runs), time per job outside the model 0.246 → 0.071 s (median). On 30 short notes "
    "(1-3 s) the time outside the model fell from 233 to 43 ms per job and the service's "
    "throughput rose by 24 % (1.35 → 1.68 audio s/s); the pool process's memory over 150 "
    "short jobs stayed flat (floor 338 MB, peak 390 MB from job 26 on)."
)


if __name__ == "__main__":
    _bare_main(sys.argv[1], sys.argv[2])
