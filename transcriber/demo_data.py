"""A realistic synthetic sensor data set, for demos, tests and benchmarks.

Three facilities in three timezones, 20 sensors (temperature, pressure, humidity), one
reading per sensor per minute. Each value follows a daily cycle in the facility's local time
plus Gaussian noise; a few scripted anomalies (a pressure spike, an overheating pump, a
pressure drop, a humidity surge) stand out, so that transcripts recorded near them have
something to join to. The same seed and start give the same data.

The set is written as the three CSV files that ``transcriber sensors load`` reads, so the
demo data goes through exactly the loader and validation that user data does.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from transcriber.clock import as_utc, utc_now


@dataclass(frozen=True)
class DemoFacility:
    code: str
    name: str
    timezone: str
    region: str


@dataclass(frozen=True)
class DemoSensor:
    facility: str
    code: str
    kind: str
    unit: str
    description: str
    base: float
    daily_amplitude: float
    noise: float


@dataclass(frozen=True)
class Anomaly:
    """A scripted excursion: ``delta`` added at full strength, ramped in and out."""

    facility: str
    sensor: str
    day: int
    local_time: str
    minutes: int
    delta: float
    description: str

    def start(self, first_day: datetime, days: int, zone: ZoneInfo) -> datetime:
        """The anomaly's start in UTC, in data that covers ``days`` from ``first_day``.

        The local time of day is kept; whole days are shifted so that the anomaly lies inside
        the data even where the local date differs from the UTC date at the edges.
        """
        hour, minute = (int(part) for part in self.local_time.split(":"))
        day = first_day.astimezone(zone).date() + timedelta(days=self.day % days)
        at = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone).astimezone(UTC)
        end = first_day + timedelta(days=days)
        while at < first_day:
            at += timedelta(days=1)
        while at + timedelta(minutes=self.minutes) > end and at - timedelta(days=1) >= first_day:
            at -= timedelta(days=1)
        return at


FACILITIES = (
    DemoFacility("rotterdam-north", "Rotterdam North Refinery", "Europe/Amsterdam", "EU-West"),
    DemoFacility("houston-bay", "Houston Bay Chemical Plant", "America/Chicago", "US-South"),
    DemoFacility("perth-desal", "Perth Desalination Works", "Australia/Perth", "APAC"),
)

# One row per sensor: facility, code, kind, unit, description, base, daily amplitude, noise.
# fmt: off
SENSORS = tuple(DemoSensor(*row) for row in (
    ("rotterdam-north", "TT-101", "temperature", "°C", "Crude heater outlet temperature", 345.0, 4.0, 0.6),  # noqa: E501
    ("rotterdam-north", "TT-102", "temperature", "°C", "Control room temperature", 21.5, 1.5, 0.2),
    ("rotterdam-north", "PT-201", "pressure", "kPa", "Distillation column head pressure", 180.0, 3.0, 0.8),  # noqa: E501
    ("rotterdam-north", "PT-202", "pressure", "kPa", "Steam header pressure", 1050.0, 12.0, 3.0),
    ("rotterdam-north", "PT-203", "pressure", "kPa", "Flare knockout drum pressure", 115.0, 1.0, 0.4),  # noqa: E501
    ("rotterdam-north", "HT-301", "humidity", "%RH", "Analyser house humidity", 48.0, 8.0, 1.0),
    ("rotterdam-north", "HT-302", "humidity", "%RH", "Tank farm ambient humidity", 78.0, 12.0, 2.0),
    ("houston-bay", "TT-101", "temperature", "°C", "Reactor R1 jacket temperature", 92.0, 2.0, 0.4),
    ("houston-bay", "TT-102", "temperature", "°C", "Cooling water pump P-7 bearing temperature", 58.0, 5.0, 0.5),  # noqa: E501
    ("houston-bay", "TT-103", "temperature", "°C", "Outdoor ambient temperature", 27.0, 6.0, 0.4),
    ("houston-bay", "PT-201", "pressure", "kPa", "Reactor R1 pressure", 640.0, 5.0, 2.0),
    ("houston-bay", "PT-202", "pressure", "kPa", "Chlorine line pressure", 410.0, 4.0, 1.5),
    ("houston-bay", "HT-301", "humidity", "%RH", "Warehouse humidity", 62.0, 10.0, 1.5),
    ("houston-bay", "HT-302", "humidity", "%RH", "Electrical room humidity", 40.0, 4.0, 0.8),
    ("perth-desal", "TT-101", "temperature", "°C", "Seawater intake temperature", 21.0, 0.8, 0.1),
    ("perth-desal", "TT-102", "temperature", "°C", "High-pressure pump motor temperature", 66.0, 3.0, 0.5),  # noqa: E501
    ("perth-desal", "PT-201", "pressure", "kPa", "Reverse osmosis feed pressure", 6200.0, 60.0, 15.0),  # noqa: E501
    ("perth-desal", "PT-202", "pressure", "kPa", "Permeate line pressure", 240.0, 4.0, 1.0),
    ("perth-desal", "HT-301", "humidity", "%RH", "Membrane hall humidity", 70.0, 9.0, 1.2),
    ("perth-desal", "HT-302", "humidity", "%RH", "Chemical store humidity", 45.0, 6.0, 1.0),
))
# fmt: on

ANOMALIES = (
    Anomaly("rotterdam-north", "PT-201", 0, "14:05", 20, 45.0, "column head pressure spike"),
    Anomaly("houston-bay", "TT-102", 1, "09:30", 45, 24.0, "pump P-7 bearing overheating"),
    Anomaly("perth-desal", "PT-201", 2, "03:40", 30, -900.0, "RO feed pressure drop"),
    Anomaly("houston-bay", "HT-302", 3, "16:10", 60, 35.0, "electrical room humidity surge"),
)


def default_start(days: int, now: datetime | None = None) -> datetime:
    """UTC midnight ``days - 1`` days ago, so the data runs up to the end of today."""
    today = as_utc(now or utc_now()).date()
    first = today - timedelta(days=days - 1)
    return datetime(first.year, first.month, first.day, tzinfo=UTC)


def _anomaly_delta(anomaly: Anomaly, start: datetime, ts: datetime) -> float:
    """The anomaly's contribution at ``ts``: a ramp over the first and last fifth."""
    elapsed = (ts - start).total_seconds() / 60.0
    if elapsed < 0 or elapsed > anomaly.minutes:
        return 0.0
    ramp = max(anomaly.minutes / 5.0, 1.0)
    strength = min(1.0, elapsed / ramp, (anomaly.minutes - elapsed) / ramp)
    return anomaly.delta * strength


def anomaly_times(start: datetime, days: int) -> list[tuple[Anomaly, datetime]]:
    """Each scripted anomaly with its UTC start time in a data set of ``days`` from ``start``."""
    zones = {f.code: ZoneInfo(f.timezone) for f in FACILITIES}
    return [(a, a.start(start, days, zones[a.facility])) for a in ANOMALIES]


def write_csv(directory: Path, days: int, start: datetime, seed: int = 7) -> dict[str, Path]:
    """Write facilities.csv, sensors.csv and readings.csv into ``directory``."""
    if days < 1:
        raise ValueError("days must be at least 1")
    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: directory / f"{name}.csv" for name in ("facilities", "sensors", "readings")}
    with paths["facilities"].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["code", "name", "timezone", "region"])
        writer.writerows((f.code, f.name, f.timezone, f.region) for f in FACILITIES)
    with paths["sensors"].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["facility", "code", "kind", "unit", "description"])
        writer.writerows((s.facility, s.code, s.kind, s.unit, s.description) for s in SENSORS)
    with paths["readings"].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["facility", "sensor", "ts", "value"])
        writer.writerows(_readings(days, start, random.Random(seed)))  # noqa: S311 (not crypto)
    return paths


def _readings(
    days: int, start: datetime, rng: random.Random
) -> Iterator[tuple[str, str, str, str]]:
    zones = {f.code: ZoneInfo(f.timezone) for f in FACILITIES}
    anomalies = anomaly_times(start, days)
    minutes = days * 24 * 60
    times = [start + timedelta(minutes=m) for m in range(minutes)]
    stamps = [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in times]
    for sensor in SENSORS:
        zone = zones[sensor.facility]
        own = [
            (a, t0)
            for a, t0 in anomalies
            if (a.facility, a.sensor) == (sensor.facility, sensor.code)
        ]
        # The daily cycle peaks mid-afternoon local time; the offset is fixed per facility,
        # which is exact enough for a day without a daylight-saving change.
        offset_h = (
            zone.utcoffset(start.replace(tzinfo=None)) or timedelta()
        ).total_seconds() / 3600
        for ts, stamp in zip(times, stamps, strict=True):
            local_hour = ts.hour + ts.minute / 60.0 + offset_h
            value = (
                sensor.base
                + sensor.daily_amplitude * math.sin(2 * math.pi * (local_hour - 9.0) / 24.0)
                + rng.gauss(0.0, sensor.noise)
            )
            for anomaly, t0 in own:
                value += _anomaly_delta(anomaly, t0, ts)
            if sensor.kind == "humidity":
                value = min(max(value, 0.0), 100.0)
            yield sensor.facility, sensor.code, stamp, f"{value:.3f}"
