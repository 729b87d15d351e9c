"""Readings said in transcripts (transcriber.mentions, transcriber.spoken_quantities).

One table of phrase → mentions over the demo facilities (and a small one with a °F sensor and a
psi sensor): codes in every written form, descriptions, digits and words, negatives, decimals,
each unit, the attribution rules, and the non-readings (times, counts, identifiers, codes'
digits, years, changes) that must give nothing. Then hostile text: huge numerals, non-finite
words, other scripts' digits, transcripts of only numbers, and the cap on mentions.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from transcriber.demo_data import SENSORS
from transcriber.mentions import MAX_MENTIONS, FacilitySensor, Mention, extract
from transcriber.results import Segment, Word
from transcriber.spoken_quantities import parse_numeral

AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
FACILITIES = {
    "R": "rotterdam-north",
    "H": "houston-bay",
    "P": "perth-desal",
}


def _facility(key: str) -> list[FacilitySensor]:
    if key == "S":  # a small site: one sensor of each kind, temperature in °F, pressure in psi
        return [
            FacilitySensor(1, "TT-1", "temperature", "°F", "Boiler room temperature"),
            FacilitySensor(2, "PT-1", "pressure", "psi", "Air receiver pressure"),
            FacilitySensor(3, "HT-1", "humidity", "%RH", "Paint booth humidity"),
        ]
    rows = [s for s in SENSORS if s.facility == FACILITIES[key]]
    return [FacilitySensor(n, s.code, s.kind, s.unit, s.description) for n, s in enumerate(rows, 1)]


def segment(text: str, start: float = 0.0, probability: float = 0.9) -> Segment:
    """``text`` as Whisper gives it: words with a leading space, 0.4 s apart."""
    words = []
    at = start
    for n, piece in enumerate(text.split()):
        words.append(Word(at, at + 0.3, (" " if n else "") + piece, probability))
        at += 0.4
    return Segment(start, at, text, words=tuple(words))


@dataclass(frozen=True)
class M:
    """An expected mention: the sensor (None: unattributed), the value in the sensor's unit
    (or as said, when unattributed), how it was attributed, and the unit as said."""

    code: str | None
    value: float
    how: str | None = "named"
    unit: str | None = "any"
    """pint's name of the unit said; None for none said; "any" when the case does not say."""


def free(value: float, unit: str) -> M:
    return M(None, value, None, unit)


# (id, facility, own sensor's code, text, expected mentions)
CASES: list[tuple[str, str, str | None, str, list[M]]] = [
    # Codes, in every form Whisper writes them.
    ("code-dash", "R", None, "PT-201 is at 190 kPa.", [M("PT-201", 190)]),
    ("code-joined", "R", None, "PT201 reads 185 kilopascals.", [M("PT-201", 185)]),
    ("code-spaced", "R", None, "PT 201 is 182 kPa.", [M("PT-201", 182)]),
    ("code-dotted", "R", None, "P.T. 201 is at 181 kPa.", [M("PT-201", 181)]),
    ("code-letters", "R", None, "P T 201 at 179 kPa.", [M("PT-201", 179)]),
    ("code-digit-words", "R", None, "PT two oh one at 178 kPa.", [M("PT-201", 178)]),
    ("code-all-spelled", "R", None, "P T two oh one at 178 kPa.", [M("PT-201", 178)]),
    ("code-all-digits", "R", None, "P T 2 0 1 at 178 kPa.", [M("PT-201", 178)]),
    ("unit-letters", "R", None, "PT-203 is 115 K P A.", [M("PT-203", 115)]),
    ("code-possessive", "R", None, "PT-201's at 177 kPa.", [M("PT-201", 177)]),
    ("code-lowercase", "R", None, "pt-201 at 176 kPa", [M("PT-201", 176)]),
    ("code-comma", "H", None, "Check TT-101, 92 degrees.", [M("TT-101", 92)]),
    ("code-humidity", "R", None, "HT-302 at 81 percent.", [M("HT-302", 81)]),
    ("code-after", "R", None, "It was 183 kPa on PT-201.", [M("PT-201", 183)]),
    (
        "two-codes",
        "R",
        None,
        "PT-201 at 190 kPa, PT-202 at 1,050 kPa.",
        [M("PT-201", 190), M("PT-202", 1050)],
    ),
    ("code-wrong-kind", "R", None, "TT-101 at 190 kPa.", [free(190, "kilopascal")]),
    (
        "hundreds-and-digits",
        "H",
        "PT-202",
        "Now at 400 and 12 kilopascals.",
        [M("PT-202", 412, "own_sensor")],
    ),
    ("thousands-and-digits", "R", None, "Steam header 1000 and 50 kPa.", [M("PT-202", 1050)]),
    ("and-joins-no-counts", "R", None, "Pumps 3 and 4, PT-201 at 190 kPa.", [M("PT-201", 190)]),
    # Descriptions and kind words.
    (
        "desc-words",
        "R",
        None,
        "Column head pressure is one hundred and ninety kilopascals.",
        [M("PT-201", 190)],
    ),
    ("desc-jacket", "H", None, "Jacket temperature is ninety-two degrees.", [M("TT-101", 92)]),
    ("desc-warehouse", "H", None, "Warehouse humidity is 64 percent.", [M("HT-301", 64)]),
    (
        "desc-pump-bearing",
        "H",
        None,
        "The pump P-7 bearing temperature is 82 degrees Celsius.",
        [M("TT-102", 82)],
    ),
    ("desc-fuzzy", "R", None, "Analyzer house humidity 52% RH.", [M("HT-301", 52)]),
    ("desc-bar", "R", None, "Steam header 10.5 bar.", [M("PT-202", 1050)]),
    (
        "desc-feed",
        "P",
        None,
        "Reverse osmosis feed pressure dropped to fifty three bar.",
        [M("PT-201", 5300)],
    ),
    ("desc-intake", "P", None, "Seawater intake temperature is 21.3 degrees.", [M("TT-101", 21.3)]),
    ("desc-electrical", "H", None, "Electrical room humidity is at 75 percent.", [M("HT-302", 75)]),
    ("desc-one-word-unit", "H", None, "The chlorine line is at 410 kPa.", [M("PT-202", 410)]),
    ("desc-degrees-c", "R", None, "Control room temperature is 22 degrees C.", [M("TT-102", 22)]),
    (
        "desc-two-kinds",
        "H",
        None,
        "Reactor R1 pressure is 640 kPa and jacket temperature 92 degrees.",
        [M("PT-201", 640), M("TT-101", 92)],
    ),
    (
        "desc-unitless-two",
        "R",
        None,
        "Column head pressure is 190, steam header pressure 1050.",
        [M("PT-201", 190, unit=None), M("PT-202", 1050, unit=None)],
    ),
    ("desc-unitless", "P", None, "Permeate line pressure is 240.", [M("PT-202", 240, unit=None)]),
    ("code-unitless", "R", None, "PT-201 is at 190.", [M("PT-201", 190, unit=None)]),
    ("code-unitless-words", "H", None, "TT-103 reads twenty seven.", [M("TT-103", 27, unit=None)]),
    ("desc-after", "H", None, "It is 190 kPa on the chlorine line.", [M("PT-202", 190)]),
    ("desc-heater-outlet", "R", None, "The heater outlet is at 345 degrees.", [M("TT-101", 345)]),
    (
        "unitless-more-words",
        "H",
        None,
        "Reactor R1 jacket is at 92.",
        [M("TT-101", 92, unit=None)],
    ),
    (
        "two-descriptions",
        "R",
        None,
        "Tank farm humidity 78 percent and the analyzer house 48 percent.",
        [M("HT-302", 78), M("HT-301", 48)],
    ),
    (
        "up-from",
        "H",
        None,
        "At 2 pm PT-201 was 650 kPa, up from 640 kPa.",
        [M("PT-201", 650), M("PT-201", 640)],
    ),
    # Units and conversions (pint): °F, psi, bar, kelvin, atmospheres, millibar, MPa, percent.
    ("f-sensor-f", "S", None, "Boiler room is at 180 degrees Fahrenheit.", [M("TT-1", 180)]),
    (
        "degrees-alone-f",
        "S",
        None,
        "It's 70 degrees.",
        [M("TT-1", 70, "only_of_kind", "degree_Fahrenheit")],
    ),
    (
        "c-to-f",
        "S",
        None,
        "Minus five degrees Celsius in the boiler room.",
        [M("TT-1", 23, unit="degree_Celsius")],
    ),
    ("kpa-to-psi", "S", None, "Air receiver pressure 1,200 kPa.", [M("PT-1", 174.045)]),
    ("words-psi", "S", None, "Thirty-two psi.", [M("PT-1", 32, "only_of_kind")]),
    ("percent-humidity", "S", None, "The paint booth is at 55 percent humidity.", [M("HT-1", 55)]),
    ("kind-word-only", "S", None, "Humidity 60 %.", [M("HT-1", 60, "only_of_kind")]),
    ("atmospheres", "S", None, "Pressure 2 atmospheres.", [M("PT-1", 29.392, "only_of_kind")]),
    ("millibar", "S", None, "Pressure 500 millibars.", [M("PT-1", 7.252, "only_of_kind")]),
    ("kelvin", "S", None, "Boiler room at 300 kelvin.", [M("TT-1", 80.33)]),
    ("megapascal", "S", None, "The receiver is at 1.2 megapascals.", [M("PT-1", 174.045)]),
    ("mpa-symbol", "S", None, "0.9 MPa.", [M("PT-1", 130.534, "only_of_kind")]),
    ("psig", "S", None, "120 psig.", [M("PT-1", 120, "only_of_kind")]),
    ("glued-celsius", "S", None, "-5°C in the boiler room.", [M("TT-1", 23)]),
    (
        "a-hundred",
        "S",
        None,
        "A hundred and five degrees Fahrenheit.",
        [M("TT-1", 105, "only_of_kind")],
    ),
    ("twelve-hundred", "S", None, "Twelve hundred kPa.", [M("PT-1", 174.045, "only_of_kind")]),
    (
        "point-words",
        "S",
        None,
        "Twenty two point five degrees Celsius.",
        [M("TT-1", 72.5, "only_of_kind")],
    ),
    ("below-zero", "S", None, "Five degrees Celsius below zero.", [M("TT-1", 23, "only_of_kind")]),
    (
        "range-between",
        "S",
        None,
        "Between 40 and 50 percent.",
        [M("HT-1", 40, "only_of_kind"), M("HT-1", 50, "only_of_kind")],
    ),
    (
        "range-from",
        "S",
        None,
        "From 100 to 120 psi.",
        [M("PT-1", 100, "only_of_kind"), M("PT-1", 120, "only_of_kind")],
    ),
    ("pascals", "S", None, "Pressure 200000 pascals.", [M("PT-1", 29.008, "only_of_kind")]),
    ("per-cent-rh", "S", None, "Forty per cent RH.", [M("HT-1", 40, "only_of_kind")]),
    (
        "relative-humidity",
        "S",
        None,
        "Thirty five percent relative humidity.",
        [M("HT-1", 35, "only_of_kind")],
    ),
    ("fahrenheit-symbol", "S", None, "It hit 212 °F.", [M("TT-1", 212, "only_of_kind")]),
    ("celsius-alone", "S", None, "It is 100 Celsius.", [M("TT-1", 212, "only_of_kind")]),
    # The recording's own sensor (placement), when the unit fits it.
    ("own-degrees", "H", "TT-101", "It's minus two degrees.", [M("TT-101", -2, "own_sensor")]),
    (
        "own-f-to-c",
        "H",
        "TT-102",
        "Reading is 180 degrees Fahrenheit.",
        [M("TT-102", 82.222, "own_sensor")],
    ),
    (
        "own-fahrenheit-symbol",
        "H",
        "TT-103",
        "Outside it is 90 °F.",
        [M("TT-103", 32.222, "own_sensor")],
    ),
    ("own-bar", "R", "PT-201", "One point five bar.", [M("PT-201", 150, "own_sensor")]),
    ("own-psi", "R", "PT-201", "It's 27.5 psi.", [M("PT-201", 189.606, "own_sensor")]),
    ("own-point-nine", "R", "PT-203", "Point nine bar.", [M("PT-203", 90, "own_sensor")]),
    ("own-glued-kpa", "R", "PT-201", "It's 190kPa.", [M("PT-201", 190, "own_sensor")]),
    ("own-glued-percent", "R", "HT-301", "Humidity's 45%.", [M("HT-301", 45, "own_sensor")]),
    ("own-unit-mismatch", "R", "TT-101", "It's 190 kPa.", [free(190, "kilopascal")]),
    ("own-negative", "R", "PT-202", "PT-202 reads negative 20 kPa.", [M("PT-202", -20)]),
    ("named-beats-own", "H", "TT-101", "TT-103 is 30 degrees.", [M("TT-103", 30)]),
    # Nobody named, several of the kind, no own sensor: kept, unattributed.
    (
        "free-celsius",
        "H",
        None,
        "Minus five degrees Celsius outside.",
        [free(-5, "degree_Celsius")],
    ),
    (
        "free-fahrenheit",
        "R",
        None,
        "It is minus 40 degrees Fahrenheit.",
        [free(-40, "degree_Fahrenheit")],
    ),
    ("free-percent", "H", None, "About 45% RH.", [free(45, "percent")]),
    ("free-degrees", "P", None, "About 30 degrees today.", [free(30, "degree_Celsius")]),
    # Not readings: times, counts, identifiers, codes' own digits, dates, years, changes.
    ("time-words", "H", None, "We met at two thirty.", []),
    ("time-after-code", "H", None, "PT-201 at two thirty.", []),
    ("time-colon", "H", None, "PT-201 at 2:30.", []),
    ("time-am", "H", None, "The shift starts at 7 a.m.", []),
    ("time-oclock", "H", None, "Call me at three o'clock.", []),
    ("time-at-small", "H", None, "TT-101 at 9.", []),
    ("time-hours", "R", None, "PT-201 at 1400 hours.", []),
    ("time-past", "H", None, "Ten past four.", []),
    ("count", "H", None, "There are three pumps running.", []),
    ("count-after-code", "H", None, "PT-201 shows 3 alarms.", []),
    ("pump-number", "H", None, "Pump 7 is running.", []),
    ("pump-tag", "H", None, "Pump P-7 was serviced.", []),
    ("reactor-tag", "H", None, "Reactor R1 is online.", []),
    ("code-no-number", "R", None, "PT-201 is reading fine.", []),
    ("unknown-code", "R", None, "Check PT 209 now.", []),
    ("codes-digits", "H", None, "TT-101, TT-102 and TT-103 are fine.", []),
    ("year", "H", None, "It was built in 2023.", []),
    ("year-after-code", "H", None, "TT-101 was 2024.", []),
    ("date", "H", None, "On March 5th we replaced pump number 4.", []),
    ("year-words", "H", None, "Twenty twenty four was a good year.", []),
    ("change-by", "H", None, "It went up by 5 degrees.", []),
    ("change-hotter", "H", None, "The jacket is 5 degrees hotter.", []),
    ("change-down", "H", None, "Turn it down 10 kPa.", []),
    ("percent-open", "H", None, "The valve is 50 percent open.", []),
    ("percent-of", "H", None, "Two percent of the pumps.", []),
    ("duration", "H", None, "We waited 10 minutes.", []),
    ("unit-and-line", "H", None, "Unit three and line 2 are down.", []),
    ("section", "H", None, "Section 4.2 of the manual.", []),
    ("version", "H", None, "Version 1.2.3 is installed.", []),
    ("extension", "H", None, "Call extension 4012.", []),
    ("decade", "H", None, "The 1990s were quieter.", []),
    ("ordinal", "H", None, "The 3rd pump.", []),
    ("ratio", "H", None, "The ratio is 3 to 1.", []),
    ("room-number", "H", None, "Room 101 is cold.", []),
    ("over-100-percent", "H", None, "It is 150 percent.", []),
    ("below-absolute-zero", "H", None, "Minus 300 degrees Celsius.", []),
    ("unitless-unnamed", "H", None, "The pressure is 190.", []),
    ("angle", "S", None, "Turn the valve 90 degrees.", []),
    ("setpoint", "H", None, "Set the warehouse to 60 percent humidity.", []),
    ("trip-limit", "H", None, "The trip on PT-201 is at 700 kPa.", []),
    ("unitless-ambiguous", "H", None, "Reactor R1 is at 92.", []),
    ("unitless-reactor", "H", None, "The reactor is at 92.", []),
    ("setpoint-above", "S", None, "It is 5 psi above the setpoint.", []),
]


def _sensor_id(facility: str, code: str | None) -> int | None:
    if code is None:
        return None
    (sensor,) = [s for s in _facility(facility) if s.code == code]
    return sensor.id


@pytest.mark.parametrize(
    ("facility", "own", "text", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_phrase_to_mentions(facility: str, own: str | None, text: str, expected: list[M]) -> None:
    mentions = extract(
        [segment(text)],
        _facility(facility),
        recorded_at=AT,
        own_sensor_id=_sensor_id(facility, own),
    )
    got = [
        M(
            m.sensor_code,
            round(m.spoken_value if m.value_in_sensor_unit is None else m.value_in_sensor_unit, 3),
            m.attribution,
            m.spoken_unit,
        )
        for m in mentions
    ]
    want = [
        M(e.code, round(e.value, 3), e.how, g.unit if e.unit == "any" else e.unit)
        for e, g in zip(expected, got, strict=False)
    ]
    if len(got) != len(expected):
        want = expected
    assert got == want, text
    for m in mentions:
        assert (m.value_in_sensor_unit is None) == (m.sensor_code is None)
        assert m.sensor_id == _sensor_id(facility, m.sensor_code)
        assert (m.score is not None) == (m.attribution == "named")
        assert m.said_at == AT + timedelta(seconds=m.start_s)


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 80
    assert len({case[0] for case in CASES}) == len(CASES)
    assert sum(1 for case in CASES if not case[4]) >= 15


def test_whisper_tokens_give_word_times_spans_and_probabilities() -> None:
    """Real Whisper words: leading spaces, punctuation glued on, a sentence over two segments."""
    words = (
        Word(10.0, 10.2, " The", 0.99),
        Word(10.2, 10.6, " column", 0.95),
        Word(10.6, 10.8, " head", 0.9),
        Word(10.8, 11.3, " pressure", 0.97),
        Word(11.3, 11.5, " is", 0.99),
        Word(11.5, 12.0, " one", 0.8),
        Word(12.0, 12.4, " hundred", 0.7),
        Word(12.4, 12.5, " and", 0.9),
        Word(12.5, 12.9, " ninety", 0.6),
        Word(12.9, 13.6, " kilopascals,", 0.5),
    )
    first = Segment(
        10.0, 13.6, " The column head pressure is one hundred and ninety kilopascals,", words=words
    )
    second = Segment(
        13.6,
        16.0,
        " and TT-101 is at 345°C.",
        words=(
            Word(13.6, 13.8, " and", 0.9),
            Word(13.8, 14.5, " TT-101", 0.8),
            Word(14.5, 14.7, " is", 0.9),
            Word(14.7, 14.8, " at", 0.9),
            Word(14.8, 15.9, " 345°C.", 0.4),
        ),
    )
    no_words = Segment(20.0, 24.0, " Steam header at 10.5 bar.")
    mentions = extract([first, second, no_words], _facility("R"), recorded_at=AT)
    assert [(m.segment, m.sensor_code, m.value_in_sensor_unit) for m in mentions] == [
        (0, "PT-201", 190.0),
        (1, "TT-101", 345.0),
        (2, "PT-202", 1050.0),
    ]
    pressure, temperature, steam = mentions
    assert pressure.text == "one hundred and ninety kilopascals"
    assert (pressure.start_s, pressure.end_s) == (11.5, 13.6)
    assert pressure.said_at == AT + timedelta(seconds=11.5)
    assert pressure.min_probability == 0.5
    assert pressure.mean_probability == pytest.approx((0.8 + 0.7 + 0.9 + 0.6 + 0.5) / 5)
    assert pressure.sensor_text == "column head pressure"
    assert pressure.spoken_unit == "kilopascal"
    assert temperature.text == "345°C"
    assert temperature.sensor_text == "TT-101"
    assert temperature.score == 100.0
    assert (temperature.start_s, temperature.min_probability) == (14.8, 0.4)
    # A segment without words: the segment's times, no probabilities.
    assert (steam.start_s, steam.end_s, steam.min_probability) == (20.0, 24.0, None)
    assert steam.text == "10.5 bar"


def _as_faster_whisper_cuts(text: str) -> Segment:
    """``text`` in words as faster-whisper cuts them: a number's "." or "," piece is a word of
    its own without a leading space (" 21", ".5"; " 1", ",050"), as tiny.en gives them."""
    words: list[Word] = []
    at = 0.0
    for piece in text.split():
        parts = re.split(r"(?<=[0-9])(?=[.,][0-9])|(?<=[A-Za-z0-9])(?=-[0-9])", piece)
        for n, part in enumerate(parts):
            words.append(Word(at, at + 0.2, ("" if n else " ") + part, 0.8 - 0.1 * n))
            at += 0.25
    return Segment(0.0, at, text, words=tuple(words))


@pytest.mark.parametrize(
    ("facility", "text", "code", "value"),
    [
        ("R", "Control room temperature is 21.5 degrees Celsius.", "TT-102", 21.5),
        ("R", "Steam header pressure is 1,050 kilopascals.", "PT-202", 1050.0),
        ("R", "Column head pressure 1.8 bar.", "PT-201", 180.0),
        ("R", "PT-203, 115.5 kilopascals.", "PT-203", 115.5),
        ("R", "PT-202 at 1,040.5 kPa.", "PT-202", 1040.5),
        # A hyphen written onto the word before joins, it is no minus sign.
        ("P", "Seawater intake temperature, TT-21 degrees.", "TT-101", 21.0),
        ("H", "TT-101-93 degrees.", "TT-101", 93.0),
        # Long unit names as tiny.en mishears them.
        ("R", "PT-203, 115.5 KLA Pascals,", "PT-203", 115.5),
        ("R", "Steam header 1050 Killer Pascals.", "PT-202", 1050.0),
        ("R", "Line to PT-202, 1040K lapascals,", "PT-202", 1040.0),
    ],
)
def test_numbers_cut_into_pieces_by_faster_whisper_are_read_whole(
    facility: str, text: str, code: str, value: float
) -> None:
    (mention,) = extract([_as_faster_whisper_cuts(text)], _facility(facility), recorded_at=AT)
    assert mention.sensor_code == code
    assert mention.value_in_sensor_unit == pytest.approx(value)
    pieces = len(re.findall(r"[0-9][.,][0-9]", text)) + 1
    if "-" not in text:
        assert mention.min_probability == pytest.approx(0.8 - 0.1 * (pieces - 1))  # the lowest


@pytest.mark.parametrize(
    "text",
    [
        "Jacket temperature, 90-2.4 degrees.",  # two numbers run together: neither is sure
        "Call in 50 cell shoes.",  # not close enough to "celsius"
        "PT-201 190 pillars.",  # short names ("bar") are never guessed
        "It is 2.4 dollar.",
        "We paid 190k for PT-201.",  # a thousands shorthand, no unit
    ],
)
def test_run_together_numbers_and_unlike_units_give_no_reading(text: str) -> None:
    found = extract([_as_faster_whisper_cuts(text)], _facility("H"), recorded_at=AT)
    assert [(m.value_in_sensor_unit, m.spoken_unit) for m in found] == []


def test_naive_recording_time_is_utc_and_channels_do_not_share_sentences() -> None:
    left = Segment(
        0.0, 1.0, " PT-201 is", words=(Word(0.0, 0.5, " PT-201", 0.9), Word(0.5, 1.0, " is", 0.9))
    )
    right = Segment(1.0, 2.0, " 190.", channel=1, words=(Word(1.0, 2.0, " 190.", 0.9),))
    assert extract([left, right], _facility("R"), recorded_at=datetime(2024, 5, 1, 12)) == []
    (mention,) = extract(
        [left, replace_channel(right, 0)], _facility("R"), recorded_at=datetime(2024, 5, 1, 12)
    )
    assert mention.said_at == AT + timedelta(seconds=1.0)
    assert (mention.sensor_code, mention.spoken_unit) == ("PT-201", None)


def replace_channel(s: Segment, channel: int) -> Segment:
    return Segment(s.start, s.end, s.text, channel=channel, words=s.words)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("190", (190.0, "")),
        ("1,200", (1200.0, "")),
        ("-1,200.5", (-1200.5, "")),
        ("−5°C", (-5.0, "°c")),
        ("45%", (45.0, "%")),
        ("190kPa", (190.0, "kpa")),
        ("1,20", None),
        ("1e999", None),
        ("2:30", None),
        ("3rd", None),
        ("1.2.3", None),
        ("5-10", None),
        ("1" * 16, None),
        ("1" * 10_000, None),
        ("123456789012345", None),  # 15 digits, but over MAX_MAGNITUDE
    ],
)
def test_parse_numeral(text: str, expected: tuple[float, str] | None) -> None:
    assert parse_numeral(text) == expected


HOSTILE = [
    "1" * 10_000 + " kPa",
    "1" * 10_000 + ".5 kPa",
    "0." + "0" * 10_000 + "1 bar",
    "1e999 kPa",
    "-1e999 degrees",
    "NaN kPa",
    "nan psi",
    "inf psi",
    "Infinity degrees",
    "-inf bar",
    "10² kPa",
    "½ bar",
    "1٢3 kPa",  # two scripts in one numeral
    "one " * 50 + "kPa",
    "minus minus minus five degrees Celsius below zero below zero",
    "minus " * 20_000 + "five degrees",
    "one hundred and " * 5_000 + "five kPa",
    "a " * 10_000 + "hundred kPa",
    "point " * 10_000 + "five bar",
    "PT " * 10_000 + "201 at 5 kPa",
    "1,,200 kPa",
    "999999999999999 kPa",
    "%%% °°° kPa kPa",
    "\u200b190\u200b kPa",
    "190\x00 kPa",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_never_crashes_or_gives_an_absurd_value(text: str) -> None:
    mentions = extract([segment(text)], _facility("S"), recorded_at=AT)
    for m in mentions:
        assert abs(m.spoken_value) <= 1e9
        assert m.value_in_sensor_unit is None or abs(m.value_in_sensor_unit) <= 1e9


@pytest.mark.parametrize(
    ("text", "psi"),
    [
        ("١٢٣ kPa", 17.84),  # Arabic-Indic digits: read as 123
        ("１９０ kPa", 27.557),  # fullwidth digits: NFKC makes them ASCII
        ("१९० kPa", 27.557),  # Devanagari
    ],
)
def test_other_scripts_digits_are_read_as_their_values(text: str, psi: float) -> None:
    (mention,) = extract([segment(text)], _facility("S"), recorded_at=AT)
    assert mention.value_in_sensor_unit == pytest.approx(psi, abs=1e-3)


def test_nothing_absurd_for_the_explicitly_listed_cases() -> None:
    for text in ("1e999 kPa", "NaN kPa", "inf psi", "1" * 10_000 + " kPa"):
        assert extract([segment(text)], _facility("S"), recorded_at=AT) == []


def test_a_transcript_of_only_numbers_gives_nothing_fast() -> None:
    digits = " ".join(str(n) for n in range(5000))
    words = " ".join(["one two three four five six seven eight nine ten"] * 500)
    started = time.perf_counter()
    for text in (digits, words, digits.replace(" ", ", "), "1. " * 5000):
        assert extract([segment(text)], _facility("H"), recorded_at=AT) == []
    assert time.perf_counter() - started < 10


def test_five_thousand_readings_stop_at_the_cap_fast() -> None:
    text = " ".join(f"PT-201 is at {180 + n % 20} kPa." for n in range(5000))
    segments = [segment(text)]
    started = time.perf_counter()
    mentions = extract(segments, _facility("R"), recorded_at=AT)
    assert time.perf_counter() - started < 10
    assert len(mentions) == MAX_MENTIONS
    assert {m.sensor_code for m in mentions} == {"PT-201"}
    assert mentions == sorted(mentions, key=lambda m: m.start_s)
    # Without a single full stop, and across many segments, the cap holds too.
    run_on = segment(" ".join(f"PT-201 {180 + n % 20} kPa" for n in range(5000)))
    assert len(extract([run_on], _facility("R"), recorded_at=AT)) == MAX_MENTIONS
    many = [segment(f"PT-201 is at {n % 50 + 150} kPa.", start=n * 3.0) for n in range(5000)]
    assert len(extract(many, _facility("R"), recorded_at=AT, limit=10)) == 10


def test_random_noise_never_crashes() -> None:
    pool = [
        "PT-201",
        "P.T.",
        "201",
        "one",
        "hundred",
        "and",
        "point",
        "five",
        "minus",
        "kPa",
        "psi",
        "bar",
        "degrees",
        "Celsius",
        "°",
        "%",
        "RH",
        "1,200",
        "1e999",
        "NaN",
        "١٢٣",
        "２",
        "²",
        "at",
        "is",
        "by",
        "between",
        "to",
        "below",
        "zero",
        ".",
        ",",
        "a",
        "pump",
        "7",
        "P-7",
        "o'clock",
        "2:30",
        "",
        "\u200b",
        "jacket",
        "temperature",
        "humidity",
        "-",
        "−5",
        "%RH",
    ]
    rng = random.Random(7)
    for _ in range(300):
        text = " ".join(rng.choice(pool) for _ in range(rng.randint(1, 40)))
        for facility in ("R", "H", "S"):
            for m in extract([segment(text)], _facility(facility), recorded_at=AT):
                assert isinstance(m, Mention)
                assert abs(m.spoken_value) <= 1e9


def test_sensors_with_odd_units_or_codes_are_matched_safely() -> None:
    sensors = [
        FacilitySensor(
            1, "101", "temperature", "°C", "Numeric code"
        ),  # digits alone: never matched
        FacilitySensor(2, "XT-9", "vibration", "mm/s", None),
        FacilitySensor(3, "ZT-1", "pressure", "not a unit ???", "Mystery pressure"),
    ]
    mentions = extract(
        [segment("101 is at 20 degrees. XT-9 at 4. ZT-1 at 190 kPa.")], sensors, recorded_at=AT
    )
    assert [(m.sensor_code, m.attribution) for m in mentions] == [
        ("101", "only_of_kind"),
        (None, None),
    ]
    assert extract([segment("Anything at 5 kPa.")], [], recorded_at=AT)[0].sensor_code is None
    assert extract([], _facility("R"), recorded_at=AT) == []


@pytest.mark.parametrize("at", [float("nan"), float("inf"), -1.0, 1e300])
def test_words_with_impossible_times_are_skipped(at: float) -> None:
    words = (Word(at, at, " 190", 0.9), Word(at, at, " kPa.", 0.9))
    assert (
        extract([Segment(at, at, " 190 kPa.", words=words)], _facility("S"), recorded_at=AT) == []
    )
    assert extract([Segment(at, at, " 190 kPa.")], _facility("S"), recorded_at=AT) == []
