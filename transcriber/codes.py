"""Facility and sensor codes: what a valid one looks like, and their ids.

A code is what names a facility or a sensor in a sensor CSV file, in an object's key and in
its S3 metadata. :data:`CODE` is the one definition of a valid code: the sensor loader
accepts only such codes, and only such codes are created automatically when an object
names one not yet known (``AUTO_REGISTER_SENSORS``), so that a hostile key or metadata
value can never become a facility of its own.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from transcriber.bulk_sql import chunks, upsert
from transcriber.schema import Facility, Sensor

log = logging.getLogger(__name__)

CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
# The longest code stored (the length CODE allows).
CODE_MAX = 64


class CodeIds:
    """Facility and sensor ids by code, looked up once per registration (and created when
    ``create`` is set and the code is one the sensor loader would accept)."""

    def __init__(self, session: Session, create: bool) -> None:
        self.session = session
        self.create = create
        self.facilities: dict[str, int | None] = {}
        self.sensors: dict[tuple[int, str], int | None] = {}

    def prefetch(self, placed: Sequence[tuple[str | None, str | None]]) -> None:
        """Look up all the ``(facility code, sensor code)`` pairs of ``placed`` at once: a
        query or two for a whole batch instead of one per code (codes still unknown are then
        created, where allowed, one by one as before)."""
        codes = {facility for facility, _ in placed if facility is not None}
        self._prefetch_facilities(sorted(codes - self.facilities.keys()))
        pairs: set[tuple[int, str]] = set()
        for facility, sensor in placed:
            facility_id = self.facility_id(facility)
            if facility_id is not None and sensor is not None:
                pairs.add((facility_id, sensor))
        self._prefetch_sensors(sorted(pairs - self.sensors.keys()))

    def _prefetch_facilities(self, codes: Sequence[str]) -> None:
        for chunk in chunks(codes):
            rows = self.session.execute(
                select(Facility.code, Facility.id).where(Facility.code.in_(chunk))
            )
            self.facilities.update((code, facility_id) for code, facility_id in rows)
            if not self.create:
                # Known to be unknown: facility_id() need not ask again.
                self.facilities.update((c, None) for c in chunk if c not in self.facilities)

    def _prefetch_sensors(self, pairs: Sequence[tuple[int, str]]) -> None:
        for chunk in chunks(pairs):
            wanted = set(chunk)
            rows = self.session.execute(
                select(Sensor.facility_id, Sensor.code, Sensor.id).where(
                    Sensor.facility_id.in_({facility_id for facility_id, _ in chunk}),
                    Sensor.code.in_({code for _, code in chunk}),
                )
            )
            self.sensors.update(
                ((facility_id, code), sensor_id)
                for facility_id, code, sensor_id in rows
                if (facility_id, code) in wanted
            )
            if not self.create:
                self.sensors.update((pair, None) for pair in wanted if pair not in self.sensors)

    def facility_id(self, code: str | None) -> int | None:
        if code is None:
            return None
        if code not in self.facilities:
            found = self.session.scalar(select(Facility.id).where(Facility.code == code))
            if found is None and self.create and CODE.fullmatch(code):
                self.session.execute(
                    upsert(self.session)(Facility)
                    .values(code=code, name=code, timezone="UTC")
                    .on_conflict_do_nothing(index_elements=["code"])
                )
                found = self.session.scalar(select(Facility.id).where(Facility.code == code))
                log.info("created facility %r (AUTO_REGISTER_SENSORS)", code)
            self.facilities[code] = found
        return self.facilities[code]

    def sensor_id(self, facility_id: int | None, code: str | None) -> int | None:
        # A sensor code means something only at a facility.
        if facility_id is None or code is None:
            return None
        key = (facility_id, code)
        if key not in self.sensors:
            where = (Sensor.facility_id == facility_id) & (Sensor.code == code)
            found = self.session.scalar(select(Sensor.id).where(where))
            if found is None and self.create and CODE.fullmatch(code):
                self.session.execute(
                    upsert(self.session)(Sensor)
                    .values(facility_id=facility_id, code=code, kind="unknown", unit="")
                    .on_conflict_do_nothing(index_elements=["facility_id", "code"])
                )
                found = self.session.scalar(select(Sensor.id).where(where))
                log.info("created sensor %r (AUTO_REGISTER_SENSORS)", code)
            self.sensors[key] = found
        return self.sensors[key]
