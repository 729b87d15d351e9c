"""The demo's voice notes (``transcriber/demo_audio/*.ogg``): what each says, how it is made,
and the checks that it still says it. Remake and check them with ``make demo-notes``
(``python -m tests.support.demo_notes``; ``--check`` checks the committed files only).

Each note is uploaded by ``transcriber demo`` as recorded ``transcriber.demo.NOTE_DELAY`` into
one of the demo data's anomalies (:mod:`transcriber.demo_data`) and says a value of its sensor
there. Three say what the sensor reads, within the default ``TRANSCRIBER_READING_TOLERANCES``;
one, an operator reading a gauge on the wall, clearly disagrees with it, so that the demo has a
disagreement to show.

The spoken values are fixed, the demo's dates are not: the data starts at UTC midnight two
days before the day it runs, so a note's reading changes with the date only through daylight
saving (the daily cycle's offset, and which minute's seeded noise the anomaly lands on) and
the anomaly's day in the three. The check computes the reading at each note's time for every
start date of a whole year and requires each note to agree (or not) on all of them. A note is
under 30 s, so the reading nearest anything it says (the one ``spoken_readings`` compares with)
is that of the minute it starts at. Measured for 2026: rotterdam-north PT-201 226.0 or 228.7
kPa, houston-bay TT-102 74.5 or 74.6 °C (73.3 and 75.7 on one date each), perth-desal PT-201
5,248.1 kPa, houston-bay HT-302 62.5 or 62.9 %RH.

Speech: flite, voice ``slt``, codes spelled as operators say them ("P T two oh one"); ffmpeg
makes Ogg Opus, mono, 24 kb/s. The check transcribes each note with the configured model
(``tiny.en`` by default) twice, as the demo's worker does (the facility's vocabulary as
hotwords) and as ``transcriber transcribe`` does (none), and requires the extraction
(:func:`transcriber.mentions.extract`) to find exactly the note's reading, for its sensor.
The demo's worker may also pack houston-bay's two notes into one window (they share the
facility's options), so they are checked packed as well, in both orders.
Needs the ``flite`` and ``ffmpeg`` commands (``make bench-tools``).
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transcriber.config import Settings
    from transcriber.job_options import TranscribeOptions
    from transcriber.mentions import FacilitySensor
    from transcriber.results import Segment
    from transcriber.speech_model import LoadedModel

ROOT = Path(__file__).resolve().parents[2]
AUDIO_DIR = ROOT / "transcriber" / "demo_audio"
VOICE = "slt"
# Ogg Opus, mono, 24 kb/s. No metadata and bit-exact muxing, so that remaking an unchanged
# note leaves its committed file byte for byte as it was.
ENCODE = (
    *("ffmpeg", "-loglevel", "error", "-y", "-i", "-", "-map_metadata", "-1"),
    *("-fflags", "+bitexact", "-flags:a", "+bitexact"),
    *("-ac", "1", "-c:a", "libopus", "-b:a", "24k", "-f", "ogg"),
)
READINGS_YEAR = 2026
"""The year of start dates the readings check covers: both daylight-saving changes of each
facility that has them, and every day of the week the anomalies can fall on."""


@dataclass(frozen=True)
class DemoNote:
    """One voice note: ``said`` is what flite speaks, ``value`` the reading it says, in the
    sensor's unit, and ``agrees`` whether that is within tolerance of the sensor's reading."""

    facility: str
    sensor: str
    said: str
    value: float
    agrees: bool

    @property
    def path(self) -> Path:
        return AUDIO_DIR / f"{self.facility}_{self.sensor}.ogg"


# The order transcriber.demo.NOTES uploads them in.
NOTES = (
    DemoNote(
        "rotterdam-north",
        "PT-201",
        "Rotterdam North. P T two oh one is reading two hundred and twenty eight kilopascals, "
        "column head pressure is climbing.",
        228.0,
        agrees=True,
    ),
    DemoNote(
        "houston-bay",
        "TT-102",
        "Pump seven bearing, T T one oh two, is at seventy five degrees and rising. "
        "Switching to the standby pump.",
        75.0,
        agrees=True,
    ),
    DemoNote(
        "perth-desal",
        "PT-201",
        "Perth night shift. P T two oh one just dropped to fifty two bar. "
        "Checking the high pressure pump.",
        5200.0,  # 52 bar in kPa
        agrees=True,
    ),
    # The electrical room's humidity surge, as the wall gauge does not show it.
    DemoNote(
        "houston-bay",
        "HT-302",
        "H T three oh two says the electrical room is humid, "
        "but the gauge on the wall reads forty percent.",
        40.0,
        agrees=False,
    ),
)


def make(note: DemoNote, out: Path) -> None:
    """Speak ``note`` with flite and write it to ``out`` as Ogg Opus."""
    wav = subprocess.run(
        ["flite", "-voice", VOICE, "-t", note.said, "-o", "/dev/stdout"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run([*ENCODE, str(out)], input=wav, check=True)


def _facility(code: str) -> tuple[list[FacilitySensor], str]:
    """The facility's sensors as extraction takes them, and its vocabulary (the hotwords the
    demo's worker decodes its audio with)."""
    from transcriber.demo_data import FACILITIES, SENSORS
    from transcriber.job_options import vocabulary
    from transcriber.mentions import FacilitySensor

    (facility,) = (f for f in FACILITIES if f.code == code)
    own = [s for s in SENSORS if s.facility == code]
    sensors = [FacilitySensor(n, s.code, s.kind, s.unit, s.description) for n, s in enumerate(own)]
    return sensors, vocabulary(facility.name, [(s.code, s.description) for s in own])


def _problem(note: DemoNote, how: str, segments: Sequence[Segment]) -> str | None:
    """Print what was heard and extracted; the problem, if it is not exactly the note's
    reading, for its sensor."""
    from transcriber.mentions import extract

    sensors, _ = _facility(note.facility)
    (own_id,) = (s.id for s in sensors if s.code == note.sensor)
    found = extract(segments, sensors, recorded_at=datetime.now(UTC), own_sensor_id=own_id)
    text = " ".join(s.text.strip() for s in segments)
    said = [(m.sensor_code, m.value_in_sensor_unit, m.attribution, m.text) for m in found]
    print(f"{note.path.name} ({how}): {text}\n    {said}")
    if [(m.sensor_code, m.value_in_sensor_unit) for m in found] == [(note.sensor, note.value)]:
        return None
    return f"{note.path.name} ({how}): {text!r} gave {said}"


def check_transcripts(notes: tuple[DemoNote, ...] = NOTES) -> list[str]:
    """Transcribe each note as the worker (alone, and packed with the other notes of its
    facility) and as ``transcriber transcribe`` do; the problems (a note whose extraction is
    not exactly its reading, for its sensor)."""
    from transcriber.config import get_settings
    from transcriber.job_options import TranscribeOptions
    from transcriber.speech_model import ModelConfig, get_model, transcribe_file

    settings = get_settings()
    loaded = get_model(ModelConfig.from_settings(settings))
    problems = []
    for note in notes:
        hotwords = _facility(note.facility)[1]
        for how, words in (("worker", hotwords), ("transcribe", None)):
            options = TranscribeOptions.from_settings(settings, hotwords=words)
            result = transcribe_file(note.path, options, loaded, settings)
            problems.append(_problem(note, how, result.segments))
    for facility in sorted({n.facility for n in notes}):
        group = [n for n in notes if n.facility == facility]
        if len(group) > 1:
            options = TranscribeOptions.from_settings(settings, hotwords=_facility(facility)[1])
            for order in (group, group[::-1]):
                problems += _check_packed(order, options, loaded, settings)
    return [p for p in problems if p is not None]


def _check_packed(
    notes: Sequence[DemoNote], options: TranscribeOptions, loaded: LoadedModel, settings: Settings
) -> list[str | None]:
    """``notes`` in one packed window, as :mod:`transcriber.packing.packed_jobs` runs them."""
    from transcriber.audio import decode
    from transcriber.packing import plan
    from transcriber.packing.packed_jobs import clip_segments
    from transcriber.packing.windows import run_windows, speech

    heard = [
        speech(
            decode(n.path, max_bytes=settings.max_audio_bytes, max_seconds=60).channels[0],
            options,
        )
        for n in notes
    ]
    (window,) = plan.plan([h.duration_s for h in heard], settings.pack_max_seconds)
    packed = replace(options, vad_filter=False, word_timestamps=True)
    (result,) = run_windows(loaded, [plan.join(window, [h.samples for h in heard])], packed)
    if isinstance(result, Exception):
        return [f"{[n.path.name for n in notes]} packed: {result!r}"]
    given = clip_segments(window, result[0], heard)
    how = f"packed {' + '.join(n.sensor for n in notes)}"
    problems: list[str | None] = []
    for index, note in enumerate(notes):
        segments = given[index]
        if isinstance(segments, str):  # the clip would run alone: why
            problems.append(f"{note.path.name} ({how}): {segments}")
        else:
            problems.append(_problem(note, how, segments))
    return problems


def check_readings(notes: tuple[DemoNote, ...] = NOTES, year: int = READINGS_YEAR) -> list[str]:
    """For every start date of ``year`` the demo could run with, the sensor's reading at each
    note's time, against the note's value; the problems (a note that agrees when it should not,
    or the other way round). About 40 s: the data is generated once per date."""
    from transcriber import demo, demo_data
    from transcriber.config import Settings, parse_reading_tolerances

    tolerances = parse_reading_tolerances(Settings().reading_tolerances)
    kinds = {(s.facility, s.code): s.kind for s in demo_data.SENSORS}
    problems = []
    seen: dict[tuple[str, str], set[float]] = {(n.facility, n.sensor): set() for n in notes}
    day = date(year, 1, 1)
    while day.year == year:
        start = demo_data.default_start(
            demo.DAYS, datetime(day.year, day.month, day.day, tzinfo=UTC)
        )
        at = {
            (a.facility, a.sensor, (t + demo.NOTE_DELAY).strftime("%Y-%m-%dT%H:%M:%SZ"))
            for a, t in demo_data.anomaly_times(start, demo.DAYS)
        }
        readings = {
            (facility, sensor): float(value)
            for facility, sensor, stamp, value in demo_data._readings(
                demo.DAYS,
                start,
                random.Random(7),  # the seed demo_data.write_csv uses
            )
            if (facility, sensor, stamp) in at
        }
        for note in notes:
            reading = readings[(note.facility, note.sensor)]
            seen[(note.facility, note.sensor)].add(round(reading, 1))
            tolerance = tolerances[kinds[(note.facility, note.sensor)]]
            allowed = (
                tolerance.absolute
                if tolerance.absolute is not None
                else abs(reading) * (tolerance.percent or 0.0) / 100.0
            )
            if (abs(note.value - reading) <= allowed) != note.agrees:
                problems.append(
                    f"{note.facility} {note.sensor}, demo run on {day}: "
                    f"said {note.value}, the sensor reads {reading:.2f} (±{allowed:.2f})"
                )
        day += timedelta(days=1)
    for (facility, sensor), values in seen.items():
        print(f"{facility} {sensor} at the note's time, {year}: {sorted(values)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="check the committed notes only")
    args = parser.parse_args(argv)
    if not args.check:
        for note in NOTES:
            make(note, note.path)
            print(f"wrote {note.path.relative_to(ROOT)}")
    problems = check_transcripts() + check_readings()
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
