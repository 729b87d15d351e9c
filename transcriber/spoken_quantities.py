"""Numbers and units as people say them and Whisper writes them, read from a transcript's words.

The first half of :mod:`transcriber.mentions` (which attributes what this finds to sensors):
Whisper's word tokens (`Token`, `tokens_of`), sentences (`sentences`) and the quantities said
in a sentence (`Quantity`, `quantities`); the units said after them, and what they are worth,
are :mod:`transcriber.spoken_units`'. Pure functions, no database.

faster-whisper cuts a word at its tokens' punctuation: "21.5" arrives as " 21" and ".5", and a
code as " PT" and "-201". The pieces of a number are put back together (`tokens_of`); a hyphen
written onto the word before it ("TT-21 degrees", no space) joins and is no minus sign.

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
from dataclasses import dataclass, replace
from itertools import pairwise

from text_to_num import text2num

from transcriber.results import Segment, Word
from transcriber.spoken_units import (
    ATTACHED_UNITS,
    DEGREES,
    MAX_MAGNITUDE,
    MAX_UNIT_WORDS,
    PERCENT,
    UNIT_PHRASES,
    misheard_unit,
    word_set,
)

MAX_SIGNIFICANT_DIGITS = 15
"""More significant digits than a double holds exactly: not a reading."""
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
    glued: bool = False
    """Written onto the word before it, with no space ("-201" in " PT", "-201")."""


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
    segment: int,
    channel: int,
    start: float,
    end: float,
    word: str,
    p: float | None,
    glued: bool = False,
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
        segment,
        channel,
        start,
        end,
        said,
        text,
        low,
        p,
        numeric,
        ends_sentence,
        ends_clause,
        glued,
    )


def _timed(start: float, end: float) -> bool:
    return 0.0 <= start <= MAX_TIME_S and 0.0 <= end <= MAX_TIME_S  # NaN fails too


_CONTINUED = re.compile(r"[.,][0-9]")


def _whole_words(words: Sequence[Word]) -> Iterator[Word]:
    """Whisper's words with a number's pieces put back together: faster-whisper cuts words at
    its tokens' leading spaces and punctuation, so "21.5" arrives as " 21" and ".5", and
    "1,050" as " 1" and ",050" (seen with tiny.en on most decimals and thousands)."""
    held: Word | None = None
    for w in words:
        if (
            held is not None
            and _CONTINUED.match(w.word)
            and held.word.rstrip()[-1:].isdigit()
            and _timed(w.start, w.end)
        ):
            low = [p for p in (held.probability, w.probability) if p is not None]
            held = Word(held.start, w.end, held.word + w.word, min(low) if low else None)
            continue
        if held is not None:
            yield held
        held = w
    if held is not None:
        yield held


def tokens_of(segments: Sequence[Segment]) -> list[Token]:
    """Every word of ``segments`` in order, a number cut in pieces joined again
    (`_whole_words`); a segment without words is split on whitespace, each piece taking the
    segment's times and no probability."""
    tokens: list[Token] = []
    for index, segment in enumerate(segments):
        if segment.words:
            for n, w in enumerate(_whole_words(segment.words)):
                if w.word.strip() and _timed(w.start, w.end):
                    glued = n > 0 and not w.word[:1].isspace()
                    tokens.append(
                        _token(index, segment.channel, w.start, w.end, w.word, w.probability, glued)
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


KILO = "k"
"""Glued to digits, the first letter of a unit cut in two ("1040K lapascals"): read only when
the words after it make a unit with it."""


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
    if glued and glued not in ATTACHED_UNITS and glued != KILO:
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
    if token.glued and token.text[:1] in "-−" and i > 0:
        # Written onto the word before ("TT-21 degrees", "TT-101-93 degrees"), a hyphen joins
        # and is no minus: what follows is the number, unless the word before is a number
        # too ("90-2.4": which one was said is anyone's guess).
        before = tokens[i - 1]
        joins = before.text[-1:].isalpha() or (before.glued and before.text[:1] in "-−")
        if not joins:
            return None, i, ""
        token = replace(token, text=token.text[1:])
    if token.numeric and token.text and token.text[0] in "0123456789+-−":
        parsed = parse_numeral(token.text)
        if parsed is None:
            return (None, i, "") if token.text[:1].isdigit() or token.text[1:2].isdigit() else None
        if not parsed[1]:
            joined = _and_rest(tokens, i, stop, taken, parsed[0])
            if joined is not None:
                return joined
        return parsed[0], i, parsed[1]
    words = _words_number(tokens, i, stop, taken)
    return None if words is None else (words[0], words[1], "")


def _and_rest(
    tokens: Sequence[Token], i: int, stop: int, taken: set[int], hundreds: float
) -> tuple[float | None, int, str] | None:
    """Whisper writes "four hundred and twelve" as "400 and 12": whole hundreds (or
    thousands), "and", then a smaller number make one number (412), as in the words."""
    scale = 1000.0 if hundreds % 1000 == 0 else 100.0
    if hundreds < 100 or hundreds % 100 or tokens[i].ends_clause:
        return None
    if i + 2 >= stop or i + 1 in taken or i + 2 in taken or tokens[i + 1].low != "and":
        return None
    if tokens[i + 1].ends_clause:
        return None
    rest = _unsigned(tokens, i + 2, stop, taken)
    if rest is None or rest[0] is None or not 0 < rest[0] < scale or rest[0] != int(rest[0]):
        return None
    return hundreds + rest[0], rest[1], rest[2]


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
    if glued in ATTACHED_UNITS or not words:
        return None, last
    return misheard_unit(words, indices, last)


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
        if glued and unit is None:
            i = last + 1
            continue  # "190k": a thousands shorthand, or a unit cut in two that is no unit
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
