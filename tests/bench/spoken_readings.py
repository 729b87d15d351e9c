"""Spoken readings, end to end: notes with known truth (tests/bench/spoken_corpus.py) through
the whole service with its defaults, scored on what the ``spoken_readings`` view returns.

A said reading counts as found when the view has a row for its recording with the same sensor,
``value_in_sensor_unit`` within 1 % of the truth and the same ``agrees``; precision is over
every row the view returns for the corpus (unattributed ones included), recall over every
reading the notes say. Then: how often a code the note says comes out spelled the plant's way
in the transcript, and what Whisper wrote when it did not; and what extraction costs a job:
each transcript's ``mentions.extract`` timed in this process (warm, and once cold in a fresh
process, pint's registry included) against the time the worker spent on the same jobs.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from statistics import median
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.bench.corpus import Clip
from tests.bench.spoken_corpus import (
    Said,
    SpokenNote,
    clips,
    expected_agrees,
    facility_rows,
    readings_csv,
    said_at,
    sensor_rows,
)
from tests.bench.stack import bench_service, start_worker, wait_finished, warm_up
from transcriber.config import Settings
from transcriber.mentions import FacilitySensor, extract
from transcriber.model_files import resolve
from transcriber.results import Segment, Word
from transcriber.schema import Sensor
from transcriber.sensors import load_files
from transcriber.speech_model import to_segment
from transcriber.transcripts import load_transcription

THREADS = 2
VALUE_TOLERANCE = 0.01
TARGET_PRECISION = 0.95
TARGET_RECALL = 0.90
TARGET_OVERHEAD = 0.05
FIRST = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
PREFIX = "spoken"


@dataclass(frozen=True)
class Row:
    """One row of the spoken_readings view."""

    sensor: str | None
    value: float | None
    agrees: bool | None
    text: str
    attribution: str | None


@dataclass(frozen=True)
class Scored:
    index: int
    note: SpokenNote
    voice: str
    transcript: str
    truth: list[tuple[Said, bool]]
    rows: list[Row]
    found: list[bool]  # per truth reading
    correct: list[bool]  # per row


def _close(value: float | None, truth: float) -> bool:
    if value is None:
        return False
    return abs(value - truth) <= max(abs(truth) * VALUE_TOLERANCE, 1e-9)


def _score(index: int, note: SpokenNote, voice: str, transcript: str, rows: list[Row]) -> Scored:
    tolerances = Settings().reading_tolerances
    truth = [(s, expected_agrees(note, s, tolerances)) for s in note.readings]
    used: set[int] = set()
    found = []
    for said, agrees in truth:
        match = next(
            (
                i
                for i, row in enumerate(rows)
                if i not in used
                and row.sensor == said.sensor
                and _close(row.value, said.value)
                and row.agrees is agrees
            ),
            None,
        )
        found.append(match is not None)
        if match is not None:
            used.add(match)
    correct = [i in used for i in range(len(rows))]
    return Scored(index, note, voice, transcript, truth, rows, found, correct)


def _load_sensors(engine: Any, scratch: Path) -> None:
    facilities = scratch / "facilities.csv"
    facilities.write_text(
        "code,name,timezone,region\n" + "".join(f"{','.join(r)}\n" for r in facility_rows())
    )
    sensors = scratch / "sensors.csv"
    sensors.write_text(
        "facility,code,kind,unit,description\n" + "".join(f"{','.join(r)}\n" for r in sensor_rows())
    )
    readings = scratch / "readings.csv"
    readings.write_text(readings_csv(FIRST))
    load_files(engine, [facilities, sensors, readings])


def _view_rows(service: Any, keys: Sequence[str]) -> dict[str, list[Row]]:
    rows = service.query(
        "SELECT v.key, v.sensor_code, v.value_in_sensor_unit, v.agrees, v.spoken_text, "
        "m.attribution FROM spoken_readings v "
        "JOIN transcript_mentions m ON m.id = v.mention_id "
        "WHERE v.key = ANY(:keys) ORDER BY v.mention_id",
        keys=list(keys),
    )
    by_key: dict[str, list[Row]] = {key: [] for key in keys}
    for r in rows:
        by_key[r.key].append(
            Row(r.sensor_code, r.value_in_sensor_unit, r.agrees, r.spoken_text, r.attribution)
        )
    return by_key


def _extraction_times(service: Any, keys: Sequence[str]) -> list[float]:
    """Seconds of `mentions.extract` on each stored transcript, warm (median of five)."""
    rows = service.query(
        "SELECT a.key, j.id AS job_id, a.facility_id, a.sensor_id, a.recorded_at "
        "FROM transcription_jobs j JOIN audio_objects a ON a.id = j.audio_object_id "
        "WHERE a.key = ANY(:keys) AND j.status = 'succeeded'",
        keys=list(keys),
    )
    times = []
    with Session(service.engine) as session:
        sensors: dict[int, list[FacilitySensor]] = {}
        for facility_id in {r.facility_id for r in rows}:
            query = select(Sensor.id, Sensor.code, Sensor.kind, Sensor.unit, Sensor.description)
            sensors[facility_id] = [
                FacilitySensor(s.id, s.code, s.kind, s.unit, s.description)
                for s in session.execute(query.where(Sensor.facility_id == facility_id))
            ]
        for r in rows:
            result = load_transcription(session, r.job_id)
            assert result is not None
            runs = []
            for _ in range(5):
                started = time.perf_counter()
                extract(
                    result.segments,
                    sensors[r.facility_id],
                    recorded_at=r.recorded_at,
                    own_sensor_id=r.sensor_id,
                )
                runs.append(time.perf_counter() - started)
            times.append(median(runs))
    return times


_COLD = """
import time
started = time.perf_counter()
from datetime import UTC, datetime
from transcriber.mentions import FacilitySensor, extract
from transcriber.results import Segment, Word
words = [Word(0.0, 0.5, "PT-201", 0.9), Word(0.5, 0.9, "reads", 0.9),
         Word(0.9, 1.5, "190", 0.9), Word(1.5, 2.0, "kilopascals.", 0.9)]
segment = Segment(0.0, 2.0, "PT-201 reads 190 kilopascals.", words=words)
imported = time.perf_counter()
found = extract([segment], [FacilitySensor(1, "PT-201", "pressure", "kPa")],
                recorded_at=datetime(2026, 1, 1, tzinfo=UTC))
assert len(found) == 1, found
print(imported - started, time.perf_counter() - imported)
"""


def _cold_extraction() -> tuple[float, float]:
    """(import, first extract) seconds in a fresh process: what a worker's first job pays."""
    done = subprocess.run([sys.executable, "-c", _COLD], capture_output=True, text=True, check=True)
    first, second = done.stdout.split()
    return float(first), float(second)


def _codes(scored: list[Scored]) -> tuple[int, int, list[str]]:
    said = spelled = 0
    wrong = []
    for s in scored:
        for code in s.note.codes:
            said += 1
            if re.search(rf"(?<![\w-]){re.escape(code)}(?![\w-])", s.transcript):
                spelled += 1
            else:
                wrong.append(f"{code}: “{s.transcript}”")
    return said, spelled, wrong


def _fmt_truth(truth: list[tuple[Said, bool]]) -> str:
    return (
        "; ".join(f"{s.sensor} {s.value:g} ({'agrees' if a else 'disagrees'})" for s, a in truth)
        or "none"
    )


def _fmt_rows(rows: list[Row]) -> str:
    return (
        "; ".join(
            f"{r.sensor or 'no sensor'} {r.value if r.value is None else f'{r.value:g}'} "
            f"({ {True: 'agrees', False: 'disagrees', None: 'no reading'}[r.agrees] }, "
            f"{r.attribution or 'unattributed'}, “{r.text}”)"
            for r in rows
        )
        or "none"
    )


# Any: start_worker's keyword flags are not all strings.
CONFIGS: dict[str, dict[str, Any]] = {
    "service default": {},
    "hotwords off": {"TRANSCRIBER_FACILITY_HOTWORDS": "false"},
    "packing off": {"TRANSCRIBER_PACK_MAX_SECONDS": "0"},
}


@dataclass(frozen=True)
class Result:
    config: str
    scored: list[Scored]
    wall_s: float
    extraction: list[float]


def _through_service(
    service: Any, config: str, spoken: list[tuple[SpokenNote, str, Clip]]
) -> Result:
    name = f"worker-{len(service.processes)}"
    start_worker(service, name, concurrency=1, threads=THREADS, **CONFIGS[config])
    warm_up(service, name, spoken[0][2], 1)
    prefix = config.replace(" ", "-")
    started = time.time()
    keys = []
    for note, _, clip in spoken:
        index = int(clip.key[-7:-4])
        metadata = {"facility": note.facility, "recorded-at": said_at(FIRST, index).isoformat()}
        if note.own_sensor:
            metadata["sensor"] = note.own_sensor
        keys.append(f"{prefix}/{clip.key}")
        service.upload(keys[-1], clip.data, **metadata)
    jobs = wait_finished(service, keys, timeout=1800)
    service.stop(name)
    wall_s = max(j.finished_at or 0.0 for j in jobs.values()) - started
    view = _view_rows(service, keys)
    extraction = _extraction_times(service, keys)
    scored = [
        _score(int(clip.key[-7:-4]), note, voice, jobs[key].text or "", view[key])
        for (note, voice, clip), key in zip(spoken, keys, strict=True)
    ]
    print(f"{config}: {_summary(scored)}", flush=True)
    return Result(config, scored, wall_s, extraction)


def _sensors_by_facility() -> dict[str, list[FacilitySensor]]:
    by_facility: dict[str, list[FacilitySensor]] = {}
    for n, (facility, code, kind, unit, description) in enumerate(sensor_rows(), start=1):
        by_facility.setdefault(facility, []).append(
            FacilitySensor(n, code, kind, unit, description)
        )
    return by_facility


def _scored_in_process(note: SpokenNote, voice: str, clip: Clip, segments: list[Segment]) -> Scored:
    """``segments`` through `mentions.extract` as a job would; ``agrees`` from the corpus's
    readings and the default tolerances (no database)."""
    index = int(clip.key[-7:-4])
    sensors = _sensors_by_facility()[note.facility]
    own = next((s.id for s in sensors if s.code == note.own_sensor), None)
    found = extract(segments, sensors, recorded_at=said_at(FIRST, index), own_sensor_id=own)
    readings = {r.sensor: r.reading for r in note.readings}
    tolerances = Settings().reading_tolerances
    rows = []
    for m in found:
        agrees = None
        if m.sensor_code in readings and m.value_in_sensor_unit is not None:
            said = Said(m.sensor_code, m.value_in_sensor_unit, readings[m.sensor_code])
            agrees = expected_agrees(note, said, tolerances)
        rows.append(Row(m.sensor_code, m.value_in_sensor_unit, agrees, m.text, m.attribution))
    text = " ".join(s.text for s in segments).strip()
    return _score(index, note, voice, text, rows)


def _bare(spoken: list[tuple[SpokenNote, str, Clip]]) -> Result:
    """Bare faster-whisper (beam 5, VAD, word timestamps; no hotwords), the same extraction
    on its words."""
    from faster_whisper import WhisperModel

    settings = Settings()
    model = WhisperModel(
        resolve(settings.model, Path(settings.model_cache_dir)),
        device="cpu",
        compute_type="int8",
        cpu_threads=THREADS,
    )
    scored = []
    for note, voice, clip in spoken:
        raw, _ = model.transcribe(
            io.BytesIO(clip.data), beam_size=5, vad_filter=True, word_timestamps=True
        )
        scored.append(_scored_in_process(note, voice, clip, [to_segment(s) for s in raw]))
    print(f"bare: {_summary(scored)}", flush=True)
    return Result("bare faster-whisper", scored, 0.0, [])


def _reference(spoken: list[tuple[SpokenNote, str, Clip]]) -> Result:
    """The extraction alone: each note's text as it was given to the voice, as if Whisper had
    written exactly that (a word every 0.4 s)."""
    scored = []
    for note, voice, clip in spoken:
        words = tuple(
            Word(0.4 * n, 0.4 * n + 0.3, f" {piece}", 1.0)
            for n, piece in enumerate(note.said.split())
        )
        segment = Segment(0.0, 0.4 * len(words), note.said, words=words)
        scored.append(_scored_in_process(note, voice, clip, [segment]))
    return Result("the text said (extraction alone)", scored, 0.0, [])


def _summary(scored: list[Scored]) -> str:
    p, r = _precision_recall(scored)
    return f"precision {p:.3f}, recall {r:.3f}"


def _precision_recall(scored: list[Scored]) -> tuple[float, float]:
    rows = sum(len(s.rows) for s in scored)
    truths = sum(len(s.truth) for s in scored)
    correct = sum(sum(s.correct) for s in scored)
    found = sum(sum(s.found) for s in scored)
    return (correct / rows if rows else 0.0), (found / truths if truths else 0.0)


def run(quick: bool) -> str:
    spoken = clips(PREFIX)
    if quick:
        spoken = spoken[::4]
    results = []
    with bench_service("spoken") as service, tempfile.TemporaryDirectory() as scratch:
        _load_sensors(service.engine, Path(scratch))
        for config in CONFIGS:
            results.append(_through_service(service, config, spoken))
    results.append(_reference(spoken))
    results.append(_bare(spoken))
    cold = _cold_extraction()
    audio_s = sum(c.seconds for _, _, c in spoken)
    return _report(results, audio_s, cold)


def _report(results: list[Result], audio_s: float, cold: tuple[float, float]) -> str:
    default = results[0]
    scored = default.scored
    truths = sum(len(s.truth) for s in scored)
    said, _, _ = _codes(scored)
    flite = sum(1 for s in scored if s.voice.startswith("flite"))
    no_reading = sum(1 for s in scored if not s.truth)
    disagree = sum(1 for s in scored for _, a in s.truth if not a)
    precision, recall = _precision_recall(scored)
    verdict_p = "meets" if precision >= TARGET_PRECISION else "MISSES"
    verdict_r = "meets" if recall >= TARGET_RECALL else "MISSES"
    total_extract = sum(default.extraction)
    share = total_extract / default.wall_s
    verdict_o = "meets" if share <= TARGET_OVERHEAD else "MISSES"
    table = []
    for result in results:
        p, r = _precision_recall(result.scored)
        rows = sum(len(s.rows) for s in result.scored)
        correct = sum(sum(s.correct) for s in result.scored)
        found = sum(sum(s.found) for s in result.scored)
        _, spelled, _ = _codes(result.scored)
        named = sum(1 for s in result.scored for row in s.rows if row.sensor is not None)
        name = f"**{result.config}**" if result is default else result.config
        table.append(
            f"| {name} | {rows} ({rows - named} with no sensor) | {correct} | "
            f"{found} of {truths} | {p:.3f} | {correct / named if named else 0:.3f} | "
            f"{r:.3f} | {spelled} of {said} |"
        )
    _, _, wrong = _codes(scored)
    misses = [s for s in scored if not all(s.found) or not all(s.correct)]
    bare = {s.index: s for s in results[-1].scored}
    lines = [
        "## Spoken readings (sensor values said in notes, checked against the sensors)",
        "",
        f"{len(scored)} operator notes of known truth (`tests/bench/spoken_corpus.py`), "
        f"{audio_s:.0f} s of audio, spoken by flite (voice slt, {flite} notes) and espeak-ng "
        f"(en-us, {len(scored) - flite}) in turn: {truths} readings said ({disagree} that the "
        f"sensor disagrees with); {no_reading} notes with no reading (numbers that are no "
        "reading, or no number). Every unit the extraction reads; codes said letter by letter "
        "and digit by digit, descriptions, kind words, the recording's own sensor; digits and "
        "words, negatives, decimals. Placed by user metadata at the demo facilities and "
        "denver-gas (°F, psi, %RH). Through the whole service (moto S3 → SQS → watcher → "
        "Redis → one Celery worker, 2 CPU threads, tiny.en) into PostgreSQL, with its "
        "defaults (facility hotwords, packing) and with each of those off, one after "
        "another in one run; scored on the `spoken_readings` view: a reading is found when a "
        "row of its recording has the same sensor, `value_in_sensor_unit` within 1 % and the "
        "same `agrees`; precision counts every row, unattributed ones too. *Bare "
        "faster-whisper*: the same model (beam 5, VAD, word timestamps, no hotwords) in this "
        "process, its words through the same `mentions.extract`, `agrees` from the corpus's "
        "readings. Targets for the default: precision ≥ 0.95, recall ≥ 0.90.",
        "",
        "| Transcripts from | Rows | Correct rows | Readings found | Precision | Precision of "
        "the rows that name a sensor | Recall | Codes spelled the plant's way |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *table,
        "",
        f"**Default: precision {precision:.3f} ({verdict_p}), recall {recall:.3f} "
        f"({verdict_r}).**"
        + (
            " Codes not spelled the plant's way, and what Whisper wrote: " + "; ".join(wrong) + "."
            if wrong
            else ""
        ),
        "",
        f"**What extraction costs a job.** The default's worker took {default.wall_s:.1f} s "
        f"of wall time for the {len(scored)} jobs (first PUT to last commit); "
        "`mentions.extract` on the same transcripts, warm, "
        f"{total_extract * 1000:.1f} ms in all (median {median(default.extraction) * 1000:.2f}"
        f" ms, most {max(default.extraction) * 1000:.2f} ms per transcript): **{share:.2%} of "
        f"the jobs' time** (target ≤ 5 %: {verdict_o}). Once per worker process the first "
        f"extraction also pays pint's unit registry: {cold[1] * 1000:.0f} ms in a fresh "
        f"process (after {cold[0] * 1000:.0f} ms of imports), on the job that also loads the "
        "model.",
        "",
    ]
    if misses:
        lines += [
            "Misses of the default (a reading not found, or a row that is wrong), with bare "
            "faster-whisper's transcript of the same note:",
            "",
            "| # | Voice | Said | Transcript | Bare faster-whisper | Truth | Rows in the view |",
            "| ---: | --- | --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {s.index} | {s.voice} | {s.note.said} | {s.transcript} | "
            f"{bare[s.index].transcript} | {_fmt_truth(s.truth)} | {_fmt_rows(s.rows)} |"
            for s in misses
        ]
    else:
        lines.append("No misses.")
    lines += [
        "",
        "Reproduce: `make bench` (this section alone, printed: "
        "`python -m tests.bench.run --only spoken_readings`).",
    ]
    return "\n".join(lines)
