"""Units as people say them, and what they are worth: the vocabulary of units said
(`UNIT_PHRASES`), a long unit name as Whisper mishears it (`misheard_unit`, rapidfuzz), and
through pint the sensor's unit, conversion (offsets included) and plausibility. The half of
:mod:`transcriber.spoken_quantities` that knows units; pure, no database. No conversion table
is written here: what a unit is worth is pint's business.
"""

from __future__ import annotations

import math
import unicodedata
from functools import cache

import pint
from rapidfuzz import fuzz, process

MAX_MAGNITUDE = 1e9
"""No sensor reads a billion of anything in the units people say."""


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
_say("kilopascal", "kilo-pascal", "kilo-pascals", "k p a", "k.p.a")
_say("pascal", "pa", "pascal", "pascals")
_say("megapascal", "mpa", "megapascal", "megapascals", "mega pascal", "mega pascals")
_say(
    "psi",
    "psi",
    "p.s.i",
    "p s i",
    "psig",
    "psia",
    "pound per square inch",
    "pounds per square inch",
)
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


MISHEARD_CUTOFF = 80.0
"""rapidfuzz ratio for a unit's long name as Whisper mishears it right after a number."""
_LONG_UNITS = {
    "".join(phrase): unit
    for phrase, unit in UNIT_PHRASES.items()
    if len("".join(phrase)) >= 7 and "".join(phrase).isalpha()
}


def misheard_unit(words: list[str], indices: list[int], last: int) -> tuple[str | None, int]:
    """A long unit name misheard right after a number: "KLA Pascals", "Killer Pascals",
    "k lapasco's" for kilopascals (tiny.en on synthetic speech). The first letter must be
    right and the words close to the name (`MISHEARD_CUTOFF`); short names ("bar", "psi")
    are never guessed, a near miss of those is too often another word."""
    for size in (2, 1):
        if any(c.isdigit() for w in words[:size] for c in w):
            continue  # another number ("90-2.4 degrees"), not a unit's letters
        said = "".join(c for w in words[:size] for c in w if c.isalpha())
        if len(said) < 7:
            continue
        found = process.extractOne(
            said, list(_LONG_UNITS), scorer=fuzz.ratio, score_cutoff=MISHEARD_CUTOFF
        )
        if found is not None and found[0][0] == said[0]:
            return _LONG_UNITS[found[0]], indices[size - 1]
    return None, last


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
