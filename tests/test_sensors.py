"""`transcriber sensors load` and `demo-data`: atomic bulk loads with errors that name the line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from tests.support.databases import run_cli
from transcriber import demo_data
from transcriber.errors import SensorDataError
from transcriber.schema import Facility, Sensor, SensorReading
from transcriber.sensors import load_files

FACILITIES = "code,name,timezone,region\nplant-a,Plant A,America/Chicago,US\nplant-b,Plant B,,\n"
SENSORS = (
    "facility,code,kind,unit,description\n"
    "plant-a,PT-1,Pressure,kPa,Feed pressure\n"
    "plant-b,TT-1,temperature,°C,\n"
)


def _write(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return path


def _readings_csv(rows: int, bad_line: int | None = None, bad_value: str = "abc") -> str:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    lines = ["facility,sensor,ts,value"]
    for n in range(rows):
        line = n + 2  # the header is line 1
        value = bad_value if line == bad_line else f"{n * 0.5:.1f}"
        ts = (start + timedelta(minutes=n)).strftime("%Y-%m-%dT%H:%M:%SZ")
        lines.append(f"plant-a,PT-1,{ts},{value}")
    return "\n".join(lines) + "\n"


def _counts(engine: Engine) -> tuple[int, int, int]:
    with Session(engine) as session:
        return (
            session.scalar(select(func.count()).select_from(Facility)) or 0,
            session.scalar(select(func.count()).select_from(Sensor)) or 0,
            session.scalar(select(func.count()).select_from(SensorReading)) or 0,
        )


def test_load_all_three_kinds_in_one_call(db: Engine, tmp_path: Path) -> None:
    paths = [
        # Any order on the command line: facilities load first, then sensors, then readings.
        _write(tmp_path, "r.csv", _readings_csv(100)),
        _write(tmp_path, "s.csv", SENSORS),
        _write(tmp_path, "f.csv", FACILITIES),
    ]
    result = load_files(db, paths)
    assert (result.facilities, result.sensors, result.readings) == (2, 2, 100)
    assert _counts(db) == (2, 2, 100)
    with Session(db) as session:
        plant_b = session.scalars(select(Facility).where(Facility.code == "plant-b")).one()
        assert (plant_b.timezone, plant_b.region) == ("UTC", None)
        kinds = set(session.scalars(select(Sensor.kind)))
        assert kinds == {"pressure", "temperature"}  # normalised to lower case


def test_timestamps_without_offset_are_facility_local_time(db: Engine, tmp_path: Path) -> None:
    readings = (
        "facility,sensor,ts,value\n"
        "plant-a,PT-1,2026-07-01T08:00:00,1\n"  # Chicago, daylight time: UTC-5
        "plant-a,PT-1,2026-07-01T08:00:00+02:00,2\n"
        "plant-a,PT-1,20260701T090000Z,3\n"  # ISO 8601 basic format
        "plant-b,TT-1,2026-07-01 08:00:00,4\n"  # plant-b: UTC
    )
    load_files(
        db,
        [
            _write(tmp_path, n, c)
            for n, c in [("f.csv", FACILITIES), ("s.csv", SENSORS), ("r.csv", readings)]
        ],
    )
    with Session(db) as session:
        got = {v: ts for ts, v in session.execute(select(SensorReading.ts, SensorReading.value))}
    assert got[1.0] == datetime(2026, 7, 1, 13, 0, tzinfo=UTC)
    assert got[2.0] == datetime(2026, 7, 1, 6, 0, tzinfo=UTC)
    assert got[3.0] == datetime(2026, 7, 1, 9, 0, tzinfo=UTC)
    assert got[4.0] == datetime(2026, 7, 1, 8, 0, tzinfo=UTC)


def test_loading_again_replaces_instead_of_doubling(db: Engine, tmp_path: Path) -> None:
    base = [_write(tmp_path, "f.csv", FACILITIES), _write(tmp_path, "s.csv", SENSORS)]
    load_files(db, [*base, _write(tmp_path, "r.csv", _readings_csv(50))])
    renamed = FACILITIES.replace("Plant A", "Plant A (renamed)")
    changed = _readings_csv(50).replace(",0.5\n", ",99.5\n")
    load_files(
        db,
        [
            _write(tmp_path, "f.csv", renamed),
            base[1],
            _write(tmp_path, "r.csv", changed),
        ],
    )
    assert _counts(db) == (2, 2, 50)
    with Session(db) as session:
        assert session.scalar(select(Facility.name).where(Facility.code == "plant-a")) == (
            "Plant A (renamed)"
        )
        assert session.scalar(select(func.max(SensorReading.value))) == 99.5


def test_bad_row_in_the_middle_loads_nothing_and_names_the_line(db: Engine, tmp_path: Path) -> None:
    paths = [
        _write(tmp_path, "f.csv", FACILITIES),
        _write(tmp_path, "s.csv", SENSORS),
        # More than one batch, so that earlier batches were already sent to the database.
        _write(tmp_path, "readings.csv", _readings_csv(25_000, bad_line=12_501)),
    ]
    with pytest.raises(SensorDataError, match=r"readings\.csv, line 12501: value 'abc' is not"):
        load_files(db, paths)
    assert _counts(db) == (0, 0, 0)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("f.csv", "code,name,timezone\nx,X,Mars/Olympus\n", "line 2: timezone 'Mars/Olympus'"),
        ("f.csv", "code,name\nx,X\nx,Y\n", "line 3: facility 'x' appears twice"),
        ("f.csv", "code,name\nbad code,X\n", "line 2: code 'bad code' is not a code"),
        ("f.csv", "code,name\nx,\n", "line 2: name is empty"),
        ("f.csv", "code,name,colour\nx,X,red\n", "line 1: unknown columns ['colour']"),
        ("f.csv", "", "the file is empty"),
        ("f.csv", "code,name,name\nx,X,Y\n", "line 1: a column name appears twice"),
        ("f.csv", "what,is,this\n1,2,3\n", "header matches no known file"),
        ("s.csv", "facility,code,kind,unit\nnowhere,PT-9,pressure,kPa\n", "unknown facility"),
        (
            "r.csv",
            "facility,sensor,ts,value\nplant-a,PT-9,2026-01-01T00:00Z,1\n",
            "unknown sensor plant-a/PT-9",
        ),
        (
            "r.csv",
            "facility,sensor,ts,value\nplant-a,PT-1,yesterday,1\n",
            "ts 'yesterday' is not an ISO 8601",
        ),
        (
            "r.csv",
            "facility,sensor,ts,value\nplant-a,PT-1,2026-01-01T00:00Z\n",
            "line 2: expected 4 fields, found 3",
        ),
        (
            "r.csv",
            "facility,sensor,ts,value\nplant-a,PT-1,2026-01-01T00:00Z,\n",
            "value '' is not a number",
        ),
        (
            "r.csv",
            "facility,sensor,ts,value\nplant-a,PT-1,2026-01-01T00:00Z,nan\n",
            "value 'nan' is not finite",
        ),
        ("r.csv", 'facility,sensor,ts,value\nplant-a,PT-1,"2026-01-01,1\n', "line 2"),
    ],
)
def test_malformed_input_is_refused_with_file_and_line(
    db: Engine, tmp_path: Path, name: str, content: str, message: str
) -> None:
    paths = [
        _write(tmp_path, "facilities.csv", FACILITIES),
        _write(tmp_path, "sensors.csv", SENSORS),
    ]
    paths.append(_write(tmp_path, name, content))
    with pytest.raises(SensorDataError) as info:
        load_files(db, paths)
    assert message in str(info.value)
    assert str(info.value).startswith(name)
    assert _counts(db) == (0, 0, 0)


def test_duplicate_reading_names_both_lines(db: Engine, tmp_path: Path) -> None:
    first = _write(tmp_path, "jan.csv", _readings_csv(10))
    second = _write(
        tmp_path,
        "jan-again.csv",
        "facility,sensor,ts,value\n" + _readings_csv(3).splitlines()[3] + "\n",
    )
    paths = [
        _write(tmp_path, "f.csv", FACILITIES),
        _write(tmp_path, "s.csv", SENSORS),
        first,
        second,
    ]
    with pytest.raises(
        SensorDataError, match=r"jan-again\.csv, line 2: repeats the reading of jan\.csv line 4"
    ):
        load_files(db, paths)
    assert _counts(db) == (0, 0, 0)


def test_non_utf8_file_is_refused(db: Engine, tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes(b"code,name\nx,Caf\xe9\n")
    with pytest.raises(SensorDataError, match="not UTF-8"):
        load_files(db, [path])


def test_cli_reports_the_bad_line_and_exits_non_zero(
    db: Engine, migrated_db_url: str, tmp_path: Path
) -> None:
    paths = [
        _write(tmp_path, "f.csv", FACILITIES),
        _write(tmp_path, "s.csv", SENSORS),
        _write(tmp_path, "r.csv", _readings_csv(100, bad_line=51, bad_value="1,5")),
    ]
    done = run_cli(migrated_db_url, "sensors", "load", *map(str, paths))
    assert done.returncode == 1
    assert "r.csv, line 51: expected 4 fields, found 5. Nothing was loaded." in done.stderr
    assert "Traceback" not in done.stderr
    assert _counts(db) == (0, 0, 0)

    done = run_cli(migrated_db_url, "sensors", "load", *map(str, paths[:2]))
    assert done.returncode == 0, done.stderr
    assert "loaded 2 facilities, 2 sensors and 0 readings" in done.stderr


def test_demo_data_is_realistic_and_has_visible_anomalies(db: Engine, tmp_path: Path) -> None:
    days = 2
    start = datetime(2026, 3, 9, tzinfo=UTC)
    paths = demo_data.write_csv(tmp_path, days=days, start=start, seed=3)
    result = load_files(db, list(paths.values()))
    assert (result.facilities, result.sensors) == (3, 20)
    assert result.readings == 20 * days * 24 * 60
    with db.connect() as conn:
        kinds: dict[str, int] = dict(
            conn.execute(text("SELECT kind, count(*) FROM sensors GROUP BY kind")).all()
        )
        assert set(kinds) == {"temperature", "pressure", "humidity"}
        span = conn.execute(text("SELECT min(ts), max(ts) FROM sensor_readings")).one()
        assert str(span[0]).startswith("2026-03-09 00:00:00")
        assert str(span[1]).startswith("2026-03-10 23:59:00")
    for anomaly, at in demo_data.anomaly_times(start, days):
        assert start <= at < start + timedelta(days=days)
        peak = at + timedelta(minutes=anomaly.minutes / 2)
        with Session(db) as session:
            sensor_id = session.scalar(
                select(Sensor.id)
                .join(Sensor.facility)
                .where(Facility.code == anomaly.facility, Sensor.code == anomaly.sensor)
            )

            def value_at(ts: datetime, sensor: int | None = sensor_id) -> float:
                stamp = ts.replace(second=0, microsecond=0)
                found = session.scalar(
                    select(SensorReading.value).where(
                        SensorReading.sensor_id == sensor, SensorReading.ts == stamp
                    )
                )
                assert found is not None
                return found

            spec = next(
                s
                for s in demo_data.SENSORS
                if (s.facility, s.code) == (anomaly.facility, anomaly.sensor)
            )
            before = value_at(at - timedelta(minutes=30))
            shift = value_at(peak) - before
            # The excursion stands out far above noise and the daily cycle over 30 minutes.
            assert abs(shift - anomaly.delta) < 0.25 * abs(anomaly.delta) + 6 * spec.noise
            assert abs(anomaly.delta) > 10 * spec.noise
