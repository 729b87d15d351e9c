"""Spoken readings with known truth: the corpus of the spoken-readings benchmark.

Each note is a short operator message spoken by flite (voice ``slt``) or espeak-ng (``en-us``)
in turn, placed at a facility (user metadata; some with the recording's own sensor too), with
the readings it says — sensor, value in the sensor's unit, and whether the sensor agreed — and
the sensor data that makes that truth: the sensor reads ``reading`` for ten minutes either side
of the note. Notes are half an hour apart, so no note sees another's readings.

The facilities and sensors are the demo data's (their names become the facility's hotwords, as
in production) and one more, denver-gas, whose sensors are in °F, psi and %RH with one sensor
of each kind (so a reading in any unit converts, and "the only sensor of its kind" is tried).

What it covers: every unit the extraction reads (kilopascals, kPa said as letters, psi, bar,
degrees Celsius, Fahrenheit, "degrees" alone, percent, percent RH, percent relative humidity);
codes said letter by letter and digit by digit, descriptions and kind words; numbers given to
the voice as digits or as words; negatives and decimals; unitless numbers after a named sensor;
readings of the recording's own sensor; two readings in one note; disagreements; numbers that
are not readings (times, counts, identifiers, years, durations, changes); notes with no
reading at all.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime, timedelta

import soundfile

from tests.bench.corpus import Clip, two_voices
from transcriber.config import ReadingTolerance, parse_reading_tolerances
from transcriber.demo_data import FACILITIES, SENSORS

EXTRA_FACILITY = ("denver-gas", "Denver Gas Compressor Station", "America/Denver", "US-West")
EXTRA_SENSORS = (
    ("denver-gas", "TT-401", "temperature", "°F", "Compressor discharge temperature"),
    ("denver-gas", "PT-401", "pressure", "psi", "Compressor suction pressure"),
    ("denver-gas", "HT-401", "humidity", "%RH", "Office humidity"),
)
NOTE_SPACING = timedelta(minutes=30)
READING_SPAN = timedelta(minutes=10)


@dataclass(frozen=True)
class Said:
    """One reading a note says: the sensor, the value in its unit, what the sensor read."""

    sensor: str
    value: float
    reading: float

    def agrees(self, kinds: dict[str, str], tolerances: dict[str, ReadingTolerance]) -> bool:
        tolerance = tolerances[kinds[self.sensor]]
        if tolerance.percent is not None:
            return abs(self.value - self.reading) <= abs(self.reading) * tolerance.percent / 100
        return abs(self.value - self.reading) <= (tolerance.absolute or 0.0)


@dataclass(frozen=True)
class SpokenNote:
    """``said`` is what the voice is given; ``readings`` the truth; ``codes`` the sensor codes
    it names (plant spelling), for the count of codes transcribed the plant's way."""

    facility: str
    own_sensor: str | None
    said: str
    readings: tuple[Said, ...]
    codes: tuple[str, ...] = ()


def _n(
    facility: str,
    said: str,
    *readings: tuple[str, float, float],
    own: str | None = None,
    codes: tuple[str, ...] = (),
) -> SpokenNote:
    return SpokenNote(facility, own, said, tuple(Said(*r) for r in readings), codes)


R, H, P, D = "rotterdam-north", "houston-bay", "perth-desal", "denver-gas"
PSI_IN_KPA = 6.894757293168361


def _f_to_c(f: float) -> float:
    return (f - 32) * 5 / 9


# fmt: off
NOTES: tuple[SpokenNote, ...] = (
    # Codes, spoken letter by letter and digit by digit, with the unit the sensor has.
    _n(R, "P T two oh one is reading one hundred and eighty two kilopascals.", ("PT-201", 182, 182.5), codes=("PT-201",)),  # noqa: E501
    _n(R, "P T two oh one reads 190 kilopascals, climbing slowly.", ("PT-201", 190, 189), codes=("PT-201",)),  # noqa: E501
    _n(H, "P T two oh one at six hundred forty kilopascals.", ("PT-201", 640, 641), codes=("PT-201",)),  # noqa: E501
    _n(H, "T T one oh one, reactor jacket, ninety two degrees.", ("TT-101", 92, 92.3), codes=("TT-101",)),  # noqa: E501
    _n(R, "H T three oh two reads seventy eight percent R H.", ("HT-302", 78, 77), codes=("HT-302",)),  # noqa: E501
    _n(H, "H T three oh two, electrical room, forty percent relative humidity.", ("HT-302", 40, 41), codes=("HT-302",)),  # noqa: E501
    _n(P, "T T one oh two, pump motor, sixty six degrees Celsius.", ("TT-102", 66, 65.6), codes=("TT-102",)),  # noqa: E501
    _n(R, "T T one oh one, crude heater outlet, 345 degrees.", ("TT-101", 345, 344.2), codes=("TT-101",)),  # noqa: E501
    _n(H, "P T two oh two, four hundred eight K P A.", ("PT-202", 408, 410), codes=("PT-202",)),
    _n(P, "P T two oh one dropped to fifty three bar.", ("PT-201", 5300, 5290), codes=("PT-201",)),
    _n(R, "Line two, P T two oh two, one thousand and forty kilopascals.", ("PT-202", 1040, 1046), codes=("PT-202",)),  # noqa: E501
    _n(R, "P T two oh three, 115.5 kilopascals.", ("PT-203", 115.5, 115.2), codes=("PT-203",)),
    # A unitless number right after a named sensor is in that sensor's unit.
    _n(R, "P T two oh three is at one hundred seventeen.", ("PT-203", 117, 116.4), codes=("PT-203",)),  # noqa: E501
    _n(H, "T T one oh two reads fifty nine.", ("TT-102", 59, 58.2), codes=("TT-102",)),
    _n(P, "H T three oh one is seventy two.", ("HT-301", 72, 70.5), codes=("HT-301",)),
    _n(P, "T T one oh one is at 21.", ("TT-101", 21, 21.2), codes=("TT-101",)),
    # Descriptions and kind words instead of codes.
    _n(R, "Steam header pressure is one thousand and fifty kilopascals.", ("PT-202", 1050, 1052)),
    _n(R, "The flare knockout drum is at 115 kilopascals, normal.", ("PT-203", 115, 114.6)),
    _n(R, "Column head pressure one point eight bar.", ("PT-201", 180, 181)),
    _n(R, "Control room temperature is twenty one point five degrees Celsius.", ("TT-102", 21.5, 21.3)),  # noqa: E501
    _n(R, "Control room is at 71 degrees Fahrenheit.", ("TT-102", _f_to_c(71), 21.9)),
    _n(R, "Analyser house humidity is forty eight percent.", ("HT-301", 48, 47)),
    _n(H, "Pump P seven bearing temperature is sixty degrees.", ("TT-102", 60, 59.1)),
    _n(H, "Outdoor temperature is minus five degrees Celsius this morning.", ("TT-103", -5, -4.6)),
    _n(H, "Outdoor ambient is 23 degrees Fahrenheit.", ("TT-103", _f_to_c(23), -4.2)),
    _n(H, "Reactor pressure ninety three psi.", ("PT-201", 93 * PSI_IN_KPA, 640)),
    _n(H, "Chlorine line pressure is four point one bar.", ("PT-202", 410, 408)),
    _n(H, "Warehouse humidity sixty two percent.", ("HT-301", 62, 63.5)),
    _n(H, "Electrical room humidity is at seventy five percent, the dehumidifier failed.", ("HT-302", 75, 74)),  # noqa: E501
    _n(H, "Jacket temperature ninety two point four degrees.", ("TT-101", 92.4, 92.1)),
    _n(H, "Outdoor temperature negative three degrees Celsius.", ("TT-103", -3, -2.5)),
    _n(P, "Reverse osmosis feed pressure is six thousand two hundred kilopascals.", ("PT-201", 6200, 6180)),  # noqa: E501
    _n(P, "Permeate line pressure 240 kilopascals.", ("PT-202", 240, 241)),
    _n(P, "Permeate pressure two hundred thirty five K P A.", ("PT-202", 235, 238)),
    _n(P, "Seawater intake temperature twenty one degrees.", ("TT-101", 21, 21.4)),
    _n(P, "Membrane hall humidity is seventy percent.", ("HT-301", 70, 68.8)),
    _n(P, "Chemical store humidity 45 percent.", ("HT-302", 45, 46)),
    _n(P, "After three hours the feed pressure is six thousand one hundred kilopascals.", ("PT-201", 6100, 6150)),  # noqa: E501
    # denver-gas: sensors in °F and psi, one of each kind.
    _n(D, "Compressor discharge is two hundred ten degrees Fahrenheit.", ("TT-401", 210, 209)),
    _n(D, "Discharge temperature is 99 degrees Celsius.", ("TT-401", 99 * 9 / 5 + 32, 211)),
    _n(D, "Suction pressure is forty five psi.", ("PT-401", 45, 44.6)),
    _n(D, "Suction pressure three hundred ten kilopascals.", ("PT-401", 310 / PSI_IN_KPA, 45.2)),
    _n(D, "Pressure is at two point five bar.", ("PT-401", 250 / PSI_IN_KPA, 36)),
    _n(D, "Humidity in the office is thirty percent.", ("HT-401", 30, 31)),
    _n(D, "Discharge temperature minus ten degrees Fahrenheit after the shutdown.", ("TT-401", -10, -9)),  # noqa: E501
    # The recording's own sensor (from its metadata), not named in the note.
    _n(H, "Reading is ninety one degrees, looks steady.", ("TT-101", 91, 91.8), own="TT-101"),
    _n(H, "Now at four hundred and twelve kilopascals.", ("PT-202", 412, 410), own="PT-202"),
    _n(R, "Fifty percent, rising after the door was left open.", ("HT-301", 50, 49), own="HT-301"),
    _n(P, "It is two point four bar.", ("PT-202", 240, 241.5), own="PT-202"),
    _n(R, "We are at 350 degrees, two more than normal.", ("TT-101", 350, 349), own="TT-101"),
    _n(H, "About sixty percent right now.", ("HT-301", 60, 61), own="HT-301"),
    # Two readings in one note.
    _n(H, "P T two oh one six hundred thirty kilopascals, and T T one oh one ninety three degrees.", ("PT-201", 630, 633), ("TT-101", 93, 92.6), codes=("PT-201", "TT-101")),  # noqa: E501
    _n(R, "Analyser house forty six percent, tank farm eighty percent.", ("HT-301", 46, 47), ("HT-302", 80, 79)),  # noqa: E501
    _n(D, "Suction pressure fifty psi and discharge two hundred degrees Fahrenheit.", ("PT-401", 50, 44), ("TT-401", 200, 201)),  # noqa: E501
    _n(H, "Pump P seven bearing is at sixty one degrees, second time this week.", ("TT-102", 61, 60.2)),  # noqa: E501
    # Said values that the sensor disagrees with.
    _n(R, "Tank farm humidity ninety one percent, that seems wrong.", ("HT-302", 91, 78)),
    _n(R, "Steam header is down to nine hundred kilopascals.", ("PT-202", 900, 1050)),
    _n(H, "P T two oh two reading three hundred kilopascals, please check the regulator.", ("PT-202", 300, 410), codes=("PT-202",)),  # noqa: E501
    _n(P, "High pressure pump motor is at ninety degrees, it should be sixty six.", ("TT-102", 90, 66)),  # noqa: E501
    _n(D, "It is sixty five percent humidity in here.", ("HT-401", 65, 30)),
    _n(D, "Temperature is one hundred eighty degrees.", ("TT-401", 180, 210)),
    # Numbers that are not readings.
    _n(H, "Pump seven was restarted at ten thirty."),
    _n(R, "Two technicians are on the way to unit three."),
    _n(P, "Work order four five six two is closed."),
    _n(H, "Valve twelve is open, tank three is full."),
    _n(R, "The shift started at six o'clock with three operators."),
    _n(D, "We replaced filter number eight in 2024."),
    _n(H, "Call me back on extension two one four."),
    _n(P, "Train two is offline for the next forty five minutes."),
    _n(R, "Raise the setpoint by five degrees on the second heater."),
    # No number at all.
    _n(R, "The flare looks normal, nothing to report."),
    _n(H, "Cooling tower fan is noisy, please send a technician."),
    _n(P, "Membrane cleaning finished, all good."),
    _n(D, "Compressor sounds rough again, I opened a work order."),
)
# fmt: on


def sensor_rows() -> list[tuple[str, str, str, str, str]]:
    """facility, code, kind, unit, description of every sensor the corpus's facilities have."""
    demo = [(s.facility, s.code, s.kind, s.unit, s.description) for s in SENSORS]
    return demo + list(EXTRA_SENSORS)


def facility_rows() -> list[tuple[str, str, str, str]]:
    demo = [(f.code, f.name, f.timezone, f.region) for f in FACILITIES]
    return [*demo, EXTRA_FACILITY]


def kinds() -> dict[tuple[str, str], str]:
    return {(f, code): kind for f, code, kind, _, _ in sensor_rows()}


def expected_agrees(note: SpokenNote, said: Said, tolerances: str) -> bool:
    by_code = {code: kind for (f, code), kind in kinds().items() if f == note.facility}
    return said.agrees(by_code, parse_reading_tolerances(tolerances))


def said_at(first: datetime, index: int) -> datetime:
    return first + index * NOTE_SPACING


def readings_csv(first: datetime) -> str:
    """facility,sensor,ts,value: each said reading's sensor reads its ``reading`` for
    `READING_SPAN` either side of its note, once a minute."""
    lines = ["facility,sensor,ts,value"]
    minutes = int(READING_SPAN / timedelta(minutes=1))
    for index, note in enumerate(NOTES):
        at = said_at(first, index)
        for said in note.readings:
            for minute in range(-minutes, minutes + 1):
                ts = at + timedelta(minutes=minute)
                lines.append(f"{note.facility},{said.sensor},{ts.isoformat()},{said.reading}")
    return "\n".join(lines) + "\n"


def clips(prefix: str) -> list[tuple[SpokenNote, str, Clip]]:
    """Every note spoken: (note, voice, clip with key ``prefix/NNN.wav``)."""
    spoken = []
    for index, note in enumerate(NOTES):
        name, wav = two_voices(index, note.said)
        info = soundfile.info(io.BytesIO(wav))
        clip = Clip(f"{prefix}/{index:03d}.wav", wav, info.duration, "wav", 16000, 1)
        spoken.append((note, name, clip))
    return spoken
