"""Bulk load of facilities, sensors and readings from CSV files.

Three file shapes, told apart by their header row (column order is free, names are exact):

- facilities: ``code,name[,timezone][,region]`` — ``timezone`` is an IANA name, default UTC.
- sensors: ``facility,code,kind,unit[,description]`` — ``facility`` is a facility code.
- readings: ``facility,sensor,ts,value`` — ``ts`` is ISO 8601; without an offset it is read
  in the facility's timezone. ``value`` is a finite number.

One call loads any mix of files in one transaction, facilities first, then sensors, then
readings, so a readings file may name sensors defined in a sensors file of the same call.
Facilities and sensors are upserted by code; a reading already in the database is replaced.
Any malformed row rolls the whole load back, and the error names the file and line.

Readings go to a temporary staging table first — by ``COPY`` on PostgreSQL, batched inserts on
SQLite — and move to ``sensor_readings`` in one ``INSERT … SELECT``: that finds duplicates in
the input before anything is written, and keeps the load a single statement's worth of index
maintenance.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.dialects import postgresql, sqlite

from transcriber.codes import CODE
from transcriber.errors import SensorDataError
from transcriber.schema import Facility, Sensor

FileKind = Literal["facilities", "sensors", "readings"]

COLUMNS: dict[FileKind, tuple[frozenset[str], frozenset[str]]] = {
    # kind: (required columns, optional columns)
    "facilities": (frozenset({"code", "name"}), frozenset({"timezone", "region"})),
    "sensors": (frozenset({"facility", "code", "kind", "unit"}), frozenset({"description"})),
    "readings": (frozenset({"facility", "sensor", "ts", "value"}), frozenset()),
}
LOAD_ORDER: tuple[FileKind, ...] = ("facilities", "sensors", "readings")

_BATCH_ROWS = 10_000
_PROGRESS_BYTES = 1 << 20
# SQLite stores timestamps as UTC text in exactly this shape (see schema.UTCDateTime).
_SQLITE_TS = "%Y-%m-%d %H:%M:%S.%f"

Progress = Callable[[int], None]


@dataclass(frozen=True)
class LoadResult:
    facilities: int = 0
    sensors: int = 0
    readings: int = 0


def detect_kind(path: Path, header: list[str]) -> FileKind:
    """Which of the three shapes a header row describes."""
    names = {name.strip() for name in header}
    if len(names) != len(header):
        raise SensorDataError(path, 1, f"a column name appears twice in the header {header}")
    for kind in ("readings", "sensors", "facilities"):
        required, optional = COLUMNS[kind]
        if required <= names:
            unknown = names - required - optional
            if unknown:
                raise SensorDataError(
                    path, 1, f"unknown columns {sorted(unknown)} in a {kind} file"
                )
            return kind
    raise SensorDataError(
        path,
        1,
        "header matches no known file: expected facilities (code,name[,timezone][,region]), "
        "sensors (facility,code,kind,unit[,description]) or readings (facility,sensor,ts,value); "
        f"got {header}",
    )


def file_kind(path: Path) -> FileKind:
    """The kind of a CSV file, from its header row."""
    header = next(csv.reader(_lines(path)), None)
    if not header:
        raise SensorDataError(path, None, "the file is empty (no header row)")
    return detect_kind(path, header)


def load_files(engine: Engine, paths: list[Path], progress: Progress | None = None) -> LoadResult:
    """Load CSV files of any of the three kinds in one transaction (see the module doc)."""
    by_kind: dict[FileKind, list[Path]] = {kind: [] for kind in LOAD_ORDER}
    for path in paths:
        by_kind[file_kind(path)].append(path)
    counts = dict.fromkeys(LOAD_ORDER, 0)
    with engine.begin() as conn:
        for path in by_kind["facilities"]:
            counts["facilities"] += _load_facilities(conn, path, progress)
        for path in by_kind["sensors"]:
            counts["sensors"] += _load_sensors(conn, path, progress)
        if by_kind["readings"]:
            counts["readings"] = _load_readings(conn, by_kind["readings"], progress)
    if counts["readings"] and engine.dialect.name == "postgresql":
        # Fresh statistics, so the planner uses the primary key for the first queries.
        with engine.begin() as conn:
            conn.execute(text("ANALYZE sensor_readings"))
    return LoadResult(**counts)


# --- reading the files -------------------------------------------------------------------


def _lines(path: Path, progress: Progress | None = None) -> Iterator[str]:
    """The file's lines as text. Decoding line by line (not in the usual 8 KiB chunks) lets
    an encoding error name its line."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise SensorDataError(path, None, f"cannot open: {exc.strerror}") from exc
    pending = 0  # bytes read but not yet reported: a progress call per line costs too much
    with handle:
        for number, raw in enumerate(handle, start=1):
            pending += len(raw)
            if progress and pending >= _PROGRESS_BYTES:
                progress(pending)
                pending = 0
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise SensorDataError(path, number, "not UTF-8 text") from exc
            # Spreadsheets often write a byte-order mark before the header.
            yield line.removeprefix("\ufeff") if number == 1 else line
    if progress and pending:
        progress(pending)


def _rows(path: Path, progress: Progress | None) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row by column name) for every data row of a small file."""
    header, rows = _table(path, progress)
    for line, row in rows:
        yield line, dict(zip(header, row, strict=True))


def _table(
    path: Path, progress: Progress | None
) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """The header, and (line number, fields) for every data row, with spaces stripped."""
    reader = csv.reader(_lines(path, progress))
    try:
        header = [name.strip() for name in next(reader, [])]
    except csv.Error as exc:
        raise SensorDataError(path, 1, f"not valid CSV: {exc}") from exc

    def rows() -> Iterator[tuple[int, list[str]]]:
        width = len(header)
        try:
            for row in reader:
                if len(row) != width:
                    if not row or (len(row) == 1 and not row[0].strip()):
                        continue  # blank line
                    raise SensorDataError(
                        path, reader.line_num, f"expected {width} fields, found {len(row)}"
                    )
                yield reader.line_num, [field.strip() for field in row]
        except csv.Error as exc:
            raise SensorDataError(path, reader.line_num, f"not valid CSV: {exc}") from exc

    return header, rows()


def _code(path: Path, line: int, row: dict[str, str], column: str) -> str:
    value = row[column]
    if not CODE.fullmatch(value):
        raise SensorDataError(
            path,
            line,
            f"{column} {value!r} is not a code (1-64 letters, digits, '_', '.', '-')",
        )
    return value


def _required(path: Path, line: int, row: dict[str, str], column: str, limit: int) -> str:
    value = row[column]
    if not value:
        raise SensorDataError(path, line, f"{column} is empty")
    if len(value) > limit:
        raise SensorDataError(path, line, f"{column} is longer than {limit} characters")
    return value


def _zone(path: Path, line: int, name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise SensorDataError(path, line, f"timezone {name!r} is not an IANA zone name") from exc


def _upsert(conn: Connection, table: Any, rows: list[dict[str, Any]], keys: list[str]) -> None:
    if not rows:
        return
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(table)
    updates = {c: stmt.excluded[c] for c in rows[0] if c not in keys}
    conn.execute(stmt.on_conflict_do_update(index_elements=keys, set_=updates), rows)


def _load_facilities(conn: Connection, path: Path, progress: Progress | None) -> int:
    rows: dict[str, dict[str, Any]] = {}
    for line, row in _rows(path, progress):
        code = _code(path, line, row, "code")
        if code in rows:
            raise SensorDataError(path, line, f"facility {code!r} appears twice")
        tz = row.get("timezone") or "UTC"
        _zone(path, line, tz)
        rows[code] = {
            "code": code,
            "name": _required(path, line, row, "name", 200),
            "timezone": tz,
            "region": row.get("region") or None,
        }
    _upsert(conn, Facility.__table__, list(rows.values()), ["code"])
    return len(rows)


def _facility_ids(conn: Connection) -> dict[str, tuple[int, str]]:
    result = conn.execute(select(Facility.code, Facility.id, Facility.timezone))
    return {code: (fid, tz) for code, fid, tz in result}


def _load_sensors(conn: Connection, path: Path, progress: Progress | None) -> int:
    facilities = _facility_ids(conn)
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    for line, row in _rows(path, progress):
        facility = _code(path, line, row, "facility")
        if facility not in facilities:
            raise SensorDataError(path, line, f"unknown facility {facility!r}")
        code = _code(path, line, row, "code")
        key = (facilities[facility][0], code)
        if key in rows:
            raise SensorDataError(path, line, f"sensor {facility}/{code} appears twice")
        rows[key] = {
            "facility_id": key[0],
            "code": code,
            "kind": _required(path, line, row, "kind", 32).lower(),
            "unit": _required(path, line, row, "unit", 32),
            "description": row.get("description") or None,
        }
    _upsert(conn, Sensor.__table__, list(rows.values()), ["facility_id", "code"])
    return len(rows)


def _sensor_index(conn: Connection) -> dict[tuple[str, str], tuple[int, ZoneInfo]]:
    result = conn.execute(
        select(Facility.code, Sensor.code, Sensor.id, Facility.timezone).join(Sensor.facility)
    )
    zones: dict[str, ZoneInfo] = {}
    return {
        (fcode, scode): (sid, zones.setdefault(tz, ZoneInfo(tz)))
        for fcode, scode, sid, tz in result
    }


def parse_timestamp(value: str, zone: ZoneInfo) -> datetime:
    """An ISO 8601 timestamp; one without an offset is local time in ``zone``."""
    ts = datetime.fromisoformat(value)
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=zone)
    return ts.astimezone(UTC)


def _parse_readings(
    paths: list[Path],
    sensors: dict[tuple[str, str], tuple[int, ZoneInfo]],
    progress: Progress | None,
) -> Iterator[tuple[int, int, int, datetime, float]]:
    """(file number, line, sensor id, UTC time, value) for every reading in ``paths``."""
    for file_no, path in enumerate(paths):
        header, rows = _table(path, progress)
        facility, sensor_code, ts_col, value_col = (
            header.index(c) for c in ("facility", "sensor", "ts", "value")
        )
        for line, row in rows:
            sensor = sensors.get((row[facility], row[sensor_code]))
            if sensor is None:
                raise SensorDataError(
                    path, line, f"unknown sensor {row[facility]}/{row[sensor_code]}"
                )
            try:
                ts = parse_timestamp(row[ts_col], sensor[1])
            except ValueError as exc:
                raise SensorDataError(
                    path, line, f"ts {row[ts_col]!r} is not an ISO 8601 timestamp"
                ) from exc
            try:
                value = float(row[value_col])
            except ValueError as exc:
                raise SensorDataError(
                    path, line, f"value {row[value_col]!r} is not a number"
                ) from exc
            if not math.isfinite(value):
                raise SensorDataError(path, line, f"value {row[value_col]!r} is not finite")
            yield file_no, line, sensor[0], ts, value


def _load_readings(conn: Connection, paths: list[Path], progress: Progress | None) -> int:
    postgres = conn.dialect.name == "postgresql"
    rows = _parse_readings(paths, _sensor_index(conn), progress)
    conn.execute(text("DROP TABLE IF EXISTS reading_staging"))
    conn.execute(
        text(
            "CREATE TEMPORARY TABLE reading_staging (file_no INTEGER NOT NULL, "
            "line INTEGER NOT NULL, sensor_id INTEGER NOT NULL, "
            f"ts {'TIMESTAMPTZ' if postgres else 'TEXT'} NOT NULL, "
            "value DOUBLE PRECISION NOT NULL)"
        )
    )
    count = _copy_staging(conn, rows) if postgres else _insert_staging(conn, rows)
    _refuse_duplicates(conn, paths)
    conn.execute(
        text(
            "INSERT INTO sensor_readings (sensor_id, ts, value) "
            "SELECT sensor_id, ts, value FROM reading_staging WHERE true "
            "ON CONFLICT (sensor_id, ts) DO UPDATE SET value = excluded.value"
        )
    )
    conn.execute(text("DROP TABLE reading_staging"))
    return count


def _copy_staging(conn: Connection, rows: Iterator[tuple[int, int, int, datetime, float]]) -> int:
    """Stream rows into the staging table with COPY, formatted here in batches: every field
    is a number or an ISO timestamp, so no escaping is needed, and this is several times
    faster than adapting row by row."""
    count = 0
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(
        "COPY reading_staging (file_no, line, sensor_id, ts, value) FROM STDIN"
    ) as copy:
        batch: list[str] = []
        for file_no, line, sensor_id, ts, value in rows:
            batch.append(f"{file_no}\t{line}\t{sensor_id}\t{ts.isoformat()}\t{value!r}\n")
            if len(batch) >= _BATCH_ROWS:
                copy.write("".join(batch))
                count += len(batch)
                batch.clear()
        if batch:
            copy.write("".join(batch))
            count += len(batch)
    return count


def _insert_staging(conn: Connection, rows: Iterator[tuple[int, int, int, datetime, float]]) -> int:
    """Batched inserts into the staging table, with timestamps in SQLite's stored shape."""
    count = 0
    batch: list[tuple[int, int, int, str, float]] = []
    statement = "INSERT INTO reading_staging VALUES (?, ?, ?, ?, ?)"
    for file_no, line, sensor_id, ts, value in rows:
        batch.append((file_no, line, sensor_id, ts.strftime(_SQLITE_TS), value))
        if len(batch) >= _BATCH_ROWS:
            conn.exec_driver_sql(statement, batch)
            count += len(batch)
            batch.clear()
    if batch:
        conn.exec_driver_sql(statement, batch)
        count += len(batch)
    return count


def _refuse_duplicates(conn: Connection, paths: list[Path]) -> None:
    """Fail, naming both lines, when the input holds two readings of one sensor at one time."""
    key = conn.execute(
        text(
            "SELECT sensor_id, ts FROM reading_staging "
            "GROUP BY sensor_id, ts HAVING count(*) > 1 LIMIT 1"
        )
    ).first()
    if key is None:
        return
    first, second = conn.execute(
        text(
            "SELECT file_no, line FROM reading_staging WHERE sensor_id = :sensor_id AND ts = :ts "
            "ORDER BY file_no, line LIMIT 2"
        ),
        {"sensor_id": key[0], "ts": key[1]},
    ).all()
    raise SensorDataError(
        paths[second[0]],
        second[1],
        f"repeats the reading of {paths[first[0]].name} line {first[1]} (same sensor and time)",
    )
