"""``transcriber demo`` (what ``make demo`` runs): the whole job once, on the embedded stack.

Starts the stack in ``var/demo/`` (wiped first), loads three days of demo sensor data, uploads
four operator voice notes — each recorded at a facility a few minutes into one of the demo
data's anomalies, each saying a value of its sensor — waits until every job is done, and
prints two queries: the transcript segments with the readings of their sensor around them
(``segment_readings``), and the values said next to the sensor's nearest reading
(``spoken_readings``), with a line for each value that disagrees with its sensor. Then it stops
the stack.

Three notes say what their sensor reads; one (houston-bay HT-302, an operator reading the gauge
on the wall) says 40 % where the sensor reads about 63 %RH. The notes, how they were made and
the check that these values hold on whatever day the demo runs are in
``tests/support/demo_notes.py`` (``make demo-notes``).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from importlib.resources import files
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy import Engine, text

from transcriber import demo_data, storage
from transcriber.db import make_engine
from transcriber.embedded import EmbeddedStack
from transcriber.sensors import load_files

DAYS = 3
TIMEOUT_S = 240.0
NOTE_DELAY = timedelta(minutes=6)  # operators speak up a few minutes into an excursion

JOIN_SQL = """
SELECT sr.facility_code, sr.sensor_code, sr.sensor_unit, sr.starts_at, sr.text,
       count(*) AS readings, min(sr.reading_value) AS low, max(sr.reading_value) AS high
FROM segment_readings sr
JOIN audio_objects a ON a.id = sr.audio_object_id
WHERE sr.sensor_id = a.sensor_id
GROUP BY sr.segment_id, sr.facility_code, sr.sensor_code, sr.sensor_unit, sr.starts_at, sr.text
ORDER BY sr.starts_at
"""

SPOKEN_SQL = """
SELECT facility_code, sensor_code, said_at, spoken_text, value_in_sensor_unit, sensor_unit,
       reading_ts, reading_value, difference, tolerance_abs, tolerance_pct, agrees
FROM spoken_readings
ORDER BY said_at, mention_id
"""


@dataclass(frozen=True)
class Note:
    facility: str
    sensor: str

    @property
    def path(self) -> Path:
        return Path(str(files("transcriber") / "demo_audio" / f"{self.facility}_{self.sensor}.ogg"))


NOTES = (
    Note("rotterdam-north", "PT-201"),
    Note("houston-bay", "TT-102"),
    Note("perth-desal", "PT-201"),
    Note("houston-bay", "HT-302"),
)


def run(var_dir: Path, console: Console) -> bool:
    """Run the demo; True when every note was transcribed and joined to readings."""
    shutil.rmtree(var_dir, ignore_errors=True)
    console.print(f"[bold]starting the embedded stack[/bold] in {var_dir}")
    with EmbeddedStack(var_dir) as stack:
        engine = make_engine(stack.settings.database_url)
        try:
            start = demo_data.default_start(DAYS)
            with tempfile.TemporaryDirectory() as scratch:
                paths = demo_data.write_csv(Path(scratch), DAYS, start)
                loaded = load_files(engine, list(paths.values()))
            console.print(
                f"loaded {loaded.facilities} facilities, {loaded.sensors} sensors, "
                f"{loaded.readings:,} readings"
            )
            keys = _upload_notes(stack, start, console)
            if not _wait(engine, stack, keys, console):
                return False
            _print_join(engine, console)
            _print_spoken(engine, console)
            return True
        finally:
            engine.dispose()


def _upload_notes(stack: EmbeddedStack, start: object, console: Console) -> list[str]:
    anomalies = {
        (a.facility, a.sensor): (a, at)
        for a, at in demo_data.anomaly_times(start, DAYS)  # type: ignore[arg-type]
    }
    client = storage.s3_client(stack.settings)
    keys = []
    for note in NOTES:
        anomaly, at = anomalies[(note.facility, note.sensor)]
        recorded = at + NOTE_DELAY
        key = f"{note.facility}/{note.sensor}/{recorded:%Y%m%dT%H%M%SZ}.ogg"
        storage.put(client, stack.bucket, key, note.path, {"recorded-at": recorded.isoformat()})
        console.print(f"uploaded s3://{stack.bucket}/{key}  ({anomaly.description})")
        keys.append(key)
    return keys


def _wait(engine: Engine, stack: EmbeddedStack, keys: Sequence[str], console: Console) -> bool:
    deadline = time.monotonic() + TIMEOUT_S
    query = text(
        "SELECT a.key, j.status, j.error_category, j.error_message FROM transcription_jobs j "
        "JOIN audio_objects a ON a.id = j.audio_object_id"
    )
    with console.status("waiting for the worker") as status:
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                rows = {r.key: r for r in conn.execute(query) if r.key in keys}
            done = [r for r in rows.values() if r.status in ("succeeded", "failed", "superseded")]
            status.update(f"waiting for the worker: {len(done)}/{len(keys)} jobs done")
            if len(done) == len(keys):
                failed = [r for r in done if r.status != "succeeded"]
                for row in failed:
                    console.print(
                        f"[red]{row.key}: {row.status} {row.error_category}: {row.error_message}"
                    )
                return not failed
            dead = stack.dead_children()
            if dead:
                console.print(f"[red]{', '.join(dead)} stopped; see {stack.var_dir / 'logs'}")
                return False
            time.sleep(0.5)
    console.print(f"[red]timed out after {TIMEOUT_S:.0f} s; see {stack.var_dir / 'logs'}")
    return False


def _print_join(engine: Engine, console: Console) -> None:
    console.print("\n[bold]Transcript segments with their sensor's readings (±5 min):[/bold]")
    console.print(JOIN_SQL.strip(), style="dim", highlight=False)
    table = Table(show_lines=False)
    for column in ("facility", "sensor", "segment starts (UTC)", "said", "readings", "range"):
        table.add_column(column, overflow="fold", min_width=40 if column == "said" else None)
    with engine.connect() as conn:
        for row in conn.execute(text(JOIN_SQL)):
            table.add_row(
                row.facility_code,
                row.sensor_code,
                str(row.starts_at)[:19],
                row.text,
                str(row.readings),
                f"{row.low:.1f}–{row.high:.1f} {row.sensor_unit}",
            )
    console.print(table)


def _amount(value: float | None, unit: str | None) -> str:
    return "–" if value is None else f"{value:,.1f} {unit or ''}".rstrip()


def _tolerance(absolute: float | None, percent: float | None) -> str:
    """As TRANSCRIBER_READING_TOLERANCES writes it: ±2 in the sensor's unit, or ±5%."""
    if absolute is not None:
        return f"±{absolute:g}"
    return "–" if percent is None else f"±{percent:g}%"


def _print_spoken(engine: Engine, console: Console) -> None:
    console.print(
        "\n[bold]Readings said in the notes, next to their sensor's nearest reading (±5 min):"
        "[/bold]"
    )
    console.print(SPOKEN_SQL.strip(), style="dim", highlight=False)
    table = Table(show_lines=False)
    columns = ("facility", "sensor", "said at (UTC)", "said", "in sensor unit", "sensor read")
    for column in (*columns, "difference", "tolerance", "agrees"):
        table.add_column(column, overflow="fold")
    agreeing = 0
    disagreements: list[str] = []
    with engine.connect() as conn:
        rows = list(conn.execute(text(SPOKEN_SQL)))
    for row in rows:
        # SQLite gives the view's boolean as 0/1; NULL: nothing to compare with (no reading
        # within the window, no value in the sensor's unit, or no tolerance for its kind).
        agrees = None if row.agrees is None else bool(row.agrees)
        verdict = {True: ("yes", "green"), False: ("NO", "bold red"), None: ("–", "")}[agrees]
        said = _amount(row.value_in_sensor_unit, row.sensor_unit)
        read = _amount(row.reading_value, row.sensor_unit)
        # Text, not markup: what was said is the model's text, which may hold brackets.
        table.add_row(
            Text(row.facility_code or "–"),
            Text(row.sensor_code or "–"),
            str(row.said_at)[:19],
            Text(row.spoken_text),
            said,
            read,
            _amount(row.difference, None),
            _tolerance(row.tolerance_abs, row.tolerance_pct),
            Text(*verdict),
        )
        agreeing += agrees is True
        if agrees is False:
            disagreements.append(
                f"{row.facility_code} {row.sensor_code}: said {row.spoken_text} ({said}), "
                f"sensor read {read} at {str(row.reading_ts)[11:16]} UTC — disagrees"
            )
    console.print(table)
    for line in disagreements:
        # One line however narrow the terminal, so that it stands out and can be grepped.
        console.print(line, style="bold red", markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"{agreeing} of {len(rows)} readings said agree with their sensor, "
        f"{len(disagreements)} disagree{'s' if len(disagreements) == 1 else ''}"
    )
