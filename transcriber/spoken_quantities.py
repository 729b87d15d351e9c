"""Numbers and units as people say them and Whisper writes them, read from a transcript's words.

The first half of :mod:`transcriber.mentions` (which attributes what this finds to sensors):
Whisper's word tokens (`Token`, `tokens_of`), sentences (`sentences`), the quantities said in
a sentence (`Quantity`, `quantities`) and units through pint (`sensor_unit`, `convert`,
`plausible`). Pure functions, no database.

A number is digits ("190", "1,200", "-5", "1.5", "190kPa", "45%") or a run of English number
words read by text2num ("one hundred and ninety", "thirty-two", "a hundred and five", "one
point five"), optionally after "minus"/"negative". Hostile text is bounded: a numeral of more
than `MAX_SIGNIFICANT_DIGITS` digits, a magnitude over `MAX_MAGNITUDE`, anything non-finite
("1e999", "NaN", "inf" are not numerals at all), superscripts and vulgar fractions, digits of two
scripts in one word, and runs of more than `MAX_NUMBER_WORDS` number words are not numbers.
Unicode decimal digits of one script ("١٢٣", fullwidth "１２３") are read as their values.

Not a number, whatever follows: a numeral glued to anything but a unit ("2:30", "3rd", "1990s",
"1e999", "5-10"), a run of number words that is not one number ("two thirty", "twenty twenty
four"), a number after an equipment word or a tag's letters ("pump 7", "unit three", "number 4",
"PT 209") unless a unit follows it, a change rather than a level ("by 5 degrees", "up 10 kPa",
"5 degrees higher"), a setting ("set it to 60 percent", "trip at 250 kPa"), an angle ("turn it
90 degrees"), and a percentage that qualifies something else ("50 percent open").
Units are matched as said (`UNIT_PHRASES`: "kPa", "kilopascals", "psi", "bar", "degrees
Celsius", "°F", "degrees" alone, "percent", "% RH", ...); all conversion is pint's.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import pairwise

import pint
from text_to_num import text2num

from transcriber.results import Segment

MAX_SIGNIFICANT_DIGITS = 15
"""More significant digits than a double holds exactly: not a reading."""
MAX_MAGNITUDE = 1e9
"""No sensor reads a billion of anything in the units people say."""
MAX_NUMBER_WORDS = 12
"""The longest run of number words read as one number ("one million two hundred ... and six")."""
MAX_NUMERAL_CHARS = 40
"""A word longer than this is never parsed as digits (a 10,000-digit number costs nothing)."""
MAX_SENTENCE_TOKENS = 200
"""A longer stretch without a full stop is cut into pieces this long, which bounds the work per
word of matching quantities to sensors."""
MAX_TIME_S = 1e7
"""Words timed outside 0 s to this (about 115 days) are skipped: no time to say them at."""
SENTENCE_GAP_S = 2.0
"""A pause this long between two segments ends a sentence even without a full stop."""

DEGREES = "degree"
"""The unit of "degrees" said alone: the attributed sensor's temperature unit, else Celsius."""
CELSIUS, FAHRENHEIT, PERCENT = "degree_Celsius", "degree_Fahrenheit", "percent"

UNIT_PHRASES: dict[tuple[str, ...], str] = {}
"""Units as said (lower-case words, punctuation off) → pint unit names. Vocabulary only: what
each unit is worth is pint's business."""


def word_set(text: str) -> frozenset[str]:
    """The set of the space-separated words of ``text`` (vocabularies written as prose)."""
    return frozenset(text.split())


def _say(unit: str, *phrases: str) -> None:
    for phrase in phrases:
        UNIT_PHRASES[tuple(phrase.split())] = unit


_say("kilopascal", "kpa", "kilopascal", "kilopascals", "kilo pascal", "kilo pascals")
_say("kilopascal", "kilo-pascal", "kilo-pascals")
_say("pascal", "pa", "pascal", "pascals")
_say("megapascal", "mpa", "megapascal", "megapascals", "mega pascal", "mega pascals")
_say("psi", "psi", "p.s.i", "psig", "psia", "pound per square inch", "pounds per square inch")
_say("bar", "bar", "bars", "barg", "bara")
_say("millibar", "mbar", "millibar", "millibars")
_say("standard_atmosphere", "atm", "atmosphere", "atmospheres")
_say(CELSIUS, "°c", "degc", "celsius", "centigrade", "° c", "° celsius", "deg c")
_say(CELSIUS, "degrees celsius", "degree celsius", "degrees centigrade", "degree centigrade")
_say(CELSIUS, "degrees c", "degree c")
_say(FAHRENHEIT, "°f", "degf", "fahrenheit", "° f", "° fahrenheit", "deg f")
_say(FAHRENHEIT, "degrees fahrenheit", "degree fahrenheit", "degrees f", "degree f")
_say("kelvin", "kelvin", "kelvins", "degrees kelvin")
_say(DEGREES, "°", "degree", "degrees", "deg")
_say(PERCENT, "%", "percent", "per cent", "pct", "%rh", "% rh", "percent rh", "per cent rh", "rh")
_say(PERCENT, "% relative humidity", "percent relative humidity", "relative humidity")
_say(PERCENT, "percent humidity", "% humidity", "per cent relative humidity")
MAX_UNIT_WORDS = max(len(phrase) for phrase in UNIT_PHRASES)
ATTACHED_UNITS = frozenset(p[0] for p in UNIT_PHRASES if len(p) == 1 and not p[0].isalpha())
ATTACHED_UNITS |= {"kpa", "psi", "bar", "mbar", "mpa", "barg", "psig"}
"""What may be glued to digits in one word ("190kPa", "45%", "-5°C"): anything else glued to
digits makes the word no number at all."""

NUMBER_WORDS = word_set(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty "
    "ninety hundred thousand million"
)
_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_WORDS = {word: digit for digit, word in enumerate(_DIGITS)} | {"oh": 0, "o": 0}
_SCALES = frozenset({"hundred", "thousand", "million"})
_SIGNS = frozenset({"minus", "negative"})

IDENTIFIER_WORDS = word_set(
    "pump pumps unit units line lines tank tanks reactor train valve compressor vessel drum bay "
    "dock room building area zone section stage phase channel step item page number no nr # "
    "shift gate door floor level bed cell loop station well boiler heater fan motor extension "
    "ext version rev revision model serial batch lot order ticket case job team crew truck "
    "route platform track berth skid module rack cabinet panel breaker circuit feeder "
    "transformer generator turbine exchanger filter tower stack tray nozzle port sensor probe "
    "alarm interlock sample test column header string bus car lane row bank"
)
"""A number right after one of these names a thing ("pump 7", "unit three"), unless a unit
follows it."""
CHANGE_BEFORE = frozenset({"by", "another", "extra", "additional", "up", "down"})
CHANGE_AFTER = word_set(
    "higher lower hotter warmer colder cooler above below more less difference apart increase "
    "decrease rise drop change swing delta variation"
)
NOT_HUMIDITY_AFTER = word_set(
    "open opened closed shut load loaded capacity full speed power efficiency of duty output "
    "throughput utilization utilisation complete completed done chance charge charged rated "
    "level battery"
)
"""A percentage followed by one of these is not a humidity ("50 percent open")."""
SETTING_WORDS = word_set(
    "set setpoint set-point setpoints target targets limit limits trip threshold spec rated design"
)
"""A number within six words after one of these, in its clause, is a setting, not a reading."""
ANGLE_WORDS = word_set(
    "turn turned turning rotate rotated rotating angle angled tilt tilted clockwise "
    "counterclockwise anticlockwise bend elbow"
)
"""Near "degrees" said alone, these make it an angle, not a temperature."""
TIME_WORDS = word_set(
    "o'clock o’clock oclock am a.m pm p.m hours hour hrs hr h minutes minute mins min seconds "
    "second secs sec s days day weeks week months month years year times time"
)
CONJUNCTIONS = frozenset({"and", "but", "so", "then", "which", "now", "right", "okay", "ok"})
_ABBREVIATIONS = frozenset({"no", "nr", "approx", "vs", "deg", "temp", "e.g", "i.e"})

_LEAD = "\"'“”‘’«»([{<¿¡"
_TRAIL = "\"'“”‘’«»)]}>,.;:!?…"
_CLOSERS = "\"'”’»)]}"
_NUMERAL = re.compile(r"([+\-−]?)([0-9][0-9,]*)(?:\.([0-9]+))?(.*)", re.ASCII | re.DOTALL)
_INITIALISM = re.compile(r"(?:[A-Za-z]\.){2,}")
_TAG_LETTERS = re.compile(r"[A-Z]{1,4}|(?:[A-Z]\.){1,4}", re.ASCII)
"""A tag's letters before its number: "PT 209", "P.T. 209", "P 7" (not "I" or "A")."""


@dataclass(frozen=True, slots=True)
class Token:
    """One word as Whisper wrote it, with what the parsers need to know about it."""

    segment: int
    channel: int
    start: float
    end: float
    said: str
    """The word as written, surrounding whitespace off ("kPa.", " P.T." → "P.T.")."""
    text: str
    """NFKC, edge punctuation off, digits in ASCII, case kept ("kPa", "P.T", "190")."""
    low: str
    probability: float | None
    numeric: bool
    """Its digits may be read (no superscripts, vulgar fractions or mixed scripts)."""
    ends_sentence: bool
    ends_clause: bool
    """A sentence end, or a comma, semicolon or colon after the word."""


@dataclass(frozen=True, slots=True)
class Quantity:
    """A number said in a sentence, with the unit said after it if any."""

    first: int
    last: int
    """Token indices, inclusive: the sign or number through the unit's last word."""
    value: float
    unit: str | None
    """A pint unit name, `DEGREES` for "degrees" alone, or None when no unit was said."""
    standalone: bool
    """Unitless and ending its clause: what may be a reading right after a named sensor."""


def _digits(word: str) -> tuple[str, bool]:
    """``word`` in NFKC with decimal digits in ASCII, and whether its digits may be read."""
    if word.isascii():
        return word, True
    if any(unicodedata.category(c) == "No" for c in word):  # ², ½, ①: no reading through NFKC
        return unicodedata.normalize("NFKC", word), False
    word = unicodedata.normalize("NFKC", word)
    zeros = {ord(c) - unicodedata.decimal(c) for c in word if c.isdecimal()}
    if len(zeros) > 1:
        return word, False
    if zeros and zeros != {ord("0")}:
        word = "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c for c in word)
    return word, True


def _token(
    segment: int, channel: int, start: float, end: float, word: str, p: float | None
) -> Token:
    said = word.strip()
    text, numeric = _digits(said)
    text = text.lstrip(_LEAD).rstrip(_TRAIL) or text
    tail = said.rstrip(_CLOSERS)
    low = text.lower()
    ends_sentence = tail[-1:] in (".", "?", "!", "…") and not (
        _INITIALISM.fullmatch(tail) or (tail.endswith(".") and low in _ABBREVIATIONS)
    )
    ends_clause = ends_sentence or tail[-1:] in (",", ";", ":")
    return Token(
        segment, channel, start, end, said, text, low, p, numeric, ends_sentence, ends_clause
    )


def _timed(start: float, end: float) -> bool:
    return 0.0 <= start <= MAX_TIME_S and 0.0 <= end <= MAX_TIME_S  # NaN fails too


def tokens_of(segments: Sequence[Segment]) -> list[Token]:
    """Every word of ``segments`` in order; a segment without words is split on whitespace, each
    piece taking the segment's times and no probability."""
    tokens: list[Token] = []
    for index, segment in enumerate(segments):
        if segment.words:
            for w in segment.words:
                if w.word.strip() and _timed(w.start, w.end):
                    tokens.append(
                        _token(index, segment.channel, w.start, w.end, w.word, w.probability)
                    )
        elif _timed(segment.start, segment.end):
            for piece in segment.text.split():
                tokens.append(
                    _token(index, segment.channel, segment.start, segment.end, piece, None)
                )
    return tokens


def sentences(tokens: Sequence[Token]) -> Iterator[range]:
    """Token ranges of sentences: up to a full stop, a change of channel, a pause of
    `SENTENCE_GAP_S` between segments, or `MAX_SENTENCE_TOKENS` words."""
    start = 0
    for i, token in enumerate(tokens):
        following = tokens[i + 1] if i + 1 < len(tokens) else None
        if (
            following is None
            or token.ends_sentence
            or i + 1 - start >= MAX_SENTENCE_TOKENS
            or following.channel != token.channel
            or (following.segment != token.segment and following.start - token.end > SENTENCE_GAP_S)
        ):
            yield range(start, i + 1)
            start = i + 1


def parse_numeral(text: str) -> tuple[float, str] | None:
    """Digits as written ("190", "-1,200.5", "45%") → (value, unit glued to it, lower-case), or
    None when the word is no number."""
    if len(text) > MAX_NUMERAL_CHARS:
        return None
    match = _NUMERAL.fullmatch(text)
    if match is None:
        return None
    sign, whole, fraction, glued = match.groups()
    glued = glued.lower()
    if glued and glued not in ATTACHED_UNITS:
        return None
    if "," in whole:
        groups = whole.split(",")
        if not 1 <= len(groups[0]) <= 3 or any(len(g) != 3 for g in groups[1:]):
            return None
        whole = whole.replace(",", "")
    fraction = fraction or ""
    if len((whole + fraction).lstrip("0")) > MAX_SIGNIFICANT_DIGITS:
        return None
    value = float(f"{whole}.{fraction}" if fraction else whole)
    if sign in ("-", "−"):
        value = -value
    if not math.isfinite(value) or abs(value) > MAX_MAGNITUDE:
        return None
    return value, glued


def _is_number_word(low: str) -> bool:
    return low in NUMBER_WORDS or ("-" in low and all(p in NUMBER_WORDS for p in low.split("-")))


def _words_number(
    tokens: Sequence[Token], i: int, stop: int, taken: set[int]
) -> tuple[float | None, int] | None:
    """A run of number words from ``i``: (value or None for a run that is no one number, last
    index), or None when no run starts there."""
    words: list[str] = []
    j = i
    while j < stop and j not in taken:
        low = tokens[j].low
        following = tokens[j + 1].low if j + 1 < stop and j + 1 not in taken else ""
        if _is_number_word(low):
            words.append(low)
        elif low == "a" and not words and following in _SCALES:
            words.append("one")
        elif low == "and" and words and words[-1] in _SCALES and _is_number_word(following):
            pass  # "one hundred and ninety": read without the "and", as every text2num reads it
        else:
            break
        j += 1
        if tokens[j - 1].ends_clause:
            break
    fraction = ""
    if (
        j + 1 < stop
        and j not in taken
        and tokens[j].low == "point"
        and not (j > i and tokens[j - 1].ends_clause)
    ):
        k = j + 1
        while k < stop and k not in taken and tokens[k].low in DIGIT_WORDS and len(fraction) < 15:
            fraction += str(DIGIT_WORDS[tokens[k].low])
            k += 1
            if tokens[k - 1].ends_clause:
                break
        if fraction:
            j = k
    if not words and not fraction:
        return None
    if len(words) > MAX_NUMBER_WORDS:
        while j < stop and _is_number_word(tokens[j].low):  # the rest of the run goes too
            j += 1
        return None, j - 1
    try:
        whole = text2num(" ".join(words), "en") if words else 0
    except Exception:  # ValueError for "two thirty"; anything else is no number either
        return None, j - 1
    value = float(f"{whole}.{fraction}" if fraction else whole)
    return (value if abs(value) <= MAX_MAGNITUDE else None), j - 1


def _number(
    tokens: Sequence[Token], i: int, stop: int, taken: set[int]
) -> tuple[float | None, int, str] | None:
    """The number starting at token ``i``: (value or None if it is no reading, its last index,
    a unit glued to its digits), or None when no number starts there."""
    token = tokens[i]
    if token.low in _SIGNS and not token.ends_clause and i + 1 < stop and i + 1 not in taken:
        if tokens[i + 1].low in _SIGNS or tokens[i + 1].text[:1] in "+-−":
            return None  # "minus minus five", "minus -5": read from the next word on
        inner = _unsigned(tokens, i + 1, stop, taken)
        if inner is None or inner[0] is None:
            return inner
        return -inner[0], inner[1], inner[2]
    return _unsigned(tokens, i, stop, taken)


def _unsigned(
    tokens: Sequence[Token], i: int, stop: int, taken: set[int]
) -> tuple[float | None, int, str] | None:
    token = tokens[i]
    if token.numeric and token.text and token.text[0] in "0123456789+-−":
        parsed = parse_numeral(token.text)
        if parsed is None:
            return (None, i, "") if token.text[:1].isdigit() or token.text[1:2].isdigit() else None
        return parsed[0], i, parsed[1]
    words = _words_number(tokens, i, stop, taken)
    return None if words is None else (words[0], words[1], "")


def _unit(
    tokens: Sequence[Token], last: int, stop: int, glued: str, taken: set[int]
) -> tuple[str | None, int]:
    """The longest unit said right after the number ending at ``last``: (unit, its last index)."""
    words: list[str] = [glued] if glued else []
    indices: list[int] = [last] if glued else []
    k = last + 1
    if not tokens[last].ends_clause:
        while k < stop and k not in taken and len(words) < MAX_UNIT_WORDS:
            words.append(tokens[k].low)
            indices.append(k)
            if tokens[k].ends_clause:
                break
            k += 1
    for size in range(len(words), 0, -1):
        unit = UNIT_PHRASES.get(tuple(words[:size]))
        if unit is not None:
            return unit, indices[size - 1]
    return None, last


def _identifier_before(tokens: Sequence[Token], first: int, start: int) -> bool:
    if first <= start:
        return False
    before = tokens[first - 1]
    return before.low in IDENTIFIER_WORDS or (
        _TAG_LETTERS.fullmatch(before.said.rstrip(",;:")) is not None
        and before.said not in ("I", "A")
    )


def _said_before(tokens: Sequence[Token], first: int, start: int, which: frozenset[str]) -> bool:
    """One of ``which`` among the six words before ``first``, in its clause."""
    for k in range(first - 1, max(start, first - 6) - 1, -1):
        if tokens[k].ends_clause:
            return False
        if tokens[k].low in which:
            return True
    return False


def quantities(tokens: Sequence[Token], span: range, taken: set[int]) -> list[Quantity]:
    """The quantities said in ``span`` (a sentence), skipping the tokens in ``taken`` (sensor
    codes): numbers with their units, and unitless numbers that are no identifier, time, year
    or change (`Quantity.standalone` tells which of those may be a reading)."""
    found: list[Quantity] = []
    i, stop = span.start, span.stop
    while i < stop:
        number = None if i in taken else _number(tokens, i, stop, taken)
        if number is None:
            i += 1
            continue
        value, last, glued = number
        if value is None:
            i = last + 1
            continue
        unit, end = _unit(tokens, last, stop, glued, taken)
        first, after = i, end + 1
        i = after
        before = tokens[first - 1].low if first > span.start else ""
        following = tokens[after].low if after < stop and not tokens[end].ends_clause else ""
        if before in CHANGE_BEFORE or following in CHANGE_AFTER - {"below", "above"}:
            continue
        if following in ("below", "above") and after + 1 < stop and tokens[after + 1].low == "zero":
            value = -value if following == "below" else value
            end, i = after + 1, after + 2
        elif following in ("below", "above"):
            continue
        if unit == PERCENT and following in NOT_HUMIDITY_AFTER:
            continue
        if _said_before(tokens, first, span.start, SETTING_WORDS):
            continue  # "set it to 60 percent", "the trip is at 250 kPa": a setting, no reading
        if unit == DEGREES and (
            following in ANGLE_WORDS or _said_before(tokens, first, span.start, ANGLE_WORDS)
        ):
            continue  # "turn the valve 90 degrees": an angle
        if unit is None:
            if _identifier_before(tokens, first, span.start) or following in TIME_WORDS:
                continue
            standalone = (
                (tokens[end].ends_clause or after >= stop or following in CONJUNCTIONS)
                and not (value.is_integer() and 1900 <= value <= 2100)  # a year
                and not (before == "at" and value.is_integer() and 1 <= value <= 12)  # "at two"
            )
            found.append(Quantity(first, end, value, None, standalone))
        else:
            found.append(Quantity(first, end, value, unit, False))
    return _ranges(tokens, span, found)


def _ranges(tokens: Sequence[Token], span: range, found: list[Quantity]) -> list[Quantity]:
    """A range said with one unit ("between 180 and 190 kPa", "from 180 to 190 kPa"): the
    first number takes the unit."""
    for n, (low, high) in enumerate(pairwise(found)):
        if (
            low.unit is None
            and high.unit is not None
            and high.first == low.last + 2
            and low.first > span.start
            and tokens[low.first - 1].low in ("between", "from")
            and tokens[low.last + 1].low in ("and", "to")
        ):
            found[n] = Quantity(low.first, low.last, low.value, high.unit, False)
    return found


@cache
def registry() -> pint.UnitRegistry[float]:
    """One pint registry per process (building one takes a fraction of a second)."""
    return pint.UnitRegistry(cache_folder=None)


@cache
def unit_of(name: str) -> pint.Unit:
    """A pint unit by name; `DEGREES` is Celsius (callers resolve it first where they can)."""
    return registry().Unit(CELSIUS if name == DEGREES else name)


_SENSOR_UNITS = {"c": CELSIUS, "deg c": CELSIUS, "f": FAHRENHEIT, "deg f": FAHRENHEIT}
"""Sensor units that, written alone, pint reads otherwise (C is a coulomb to pint)."""


@cache
def sensor_unit(text: str) -> pint.Unit | None:
    """A sensor's unit as the sensor data writes it ("°C", "kPa", "%RH") as a pint unit, or
    None when it is no unit pint knows. Humidity's "%RH" is a percentage."""
    cleaned = unicodedata.normalize("NFKC", text).strip()
    said = _SENSOR_UNITS.get(cleaned.lower()) or UNIT_PHRASES.get(tuple(cleaned.lower().split()))
    if said is not None:
        return unit_of(said)
    if not cleaned or len(cleaned) > 32:
        return None
    try:
        return registry().parse_units(cleaned)
    except Exception:  # pint raises several types for what it cannot read
        return None


def fits(unit: str, target: pint.Unit) -> bool:
    """Whether a quantity said in ``unit`` can be a reading of a sensor in ``target``."""
    return bool(unit_of(unit).dimensionality == target.dimensionality)


def plausible(value: float, unit: pint.Unit) -> bool:
    """Finite, within `MAX_MAGNITUDE`, a temperature not below absolute zero, a percentage
    from 0 to 100."""
    if not math.isfinite(value) or abs(value) > MAX_MAGNITUDE:
        return False
    if unit == unit_of(PERCENT):
        return 0.0 <= value <= 100.0
    if unit.dimensionality == unit_of(CELSIUS).dimensionality:
        kelvin = registry().Quantity(value, unit).to("kelvin").magnitude
        return bool(kelvin >= 0.0)
    return True


def convert(value: float, unit: pint.Unit, target: pint.Unit) -> float | None:
    """``value`` in ``unit`` expressed in ``target`` by pint (offsets included), to 12
    significant digits; None when it does not convert or the result is not plausible."""
    try:
        result = float(registry().Quantity(value, unit).to(target).magnitude)
    except pint.PintError:
        return None
    result = float(f"{result:.12g}")
    return result if plausible(result, target) else None
