"""Sensor readings said in a transcript, attributed to the facility's sensors.

`extract` turns a transcript's segments into `Mention` values: what someone said a pressure,
temperature or humidity was, when they said it (word-level times), and which of the facility's
sensors (`FacilitySensor`) it is about. Pure functions, no database; numbers and units are read
by :mod:`transcriber.spoken_quantities`, sensor names are matched here with rapidfuzz.

What counts as a reading (decided here, tested in tests/test_mentions.py):

- a number with a unit said after it: "190 kPa", "one point five bar", "minus five degrees
  Celsius", "45% RH", "ninety-two degrees" (see `spoken_quantities` for what is no number:
  times, years, counts, identifiers such as "pump 7" or "P-7", the digits of a code, changes);
- a number said without a unit only right after a named sensor, with at most
  `MAX_FILLER_WORDS` of `FILLER_WORDS` between ("PT-201 is at 190.", "the column head pressure
  reads 190, ..."), ending its clause, and not a year or "at" with 1-12 (a clock time): it is
  then in that sensor's unit. Anything else without a unit is not a reading.

Sensors are named in a sentence by their code in any form Whisper writes it ("PT-201", "PT201",
"PT 201", "P.T. 201", "PT two oh one"; letters in capitals unless digits share the word; codes
of digits alone are never matched), scored 100; or by the words of their description, each
matched with rapidfuzz's ratio (at least `FUZZY_CUTOFF`; words of four letters or fewer
exactly), scored by the share of the description's IDF weight said, the sensor's kind word
("temperature", "humidity") counting as one more word. A description counts when one of its
distinctive words is said and either two are, or the kind word is, or the quantity's unit fits
the sensor.

Each quantity goes to: the sensor named nearest before it in the same sentence whose unit it
fits, or if none before it, nearest after it (a tie between two sensors names neither; for a
unitless number, two sensors named by the same words are a tie) → "named"; else the
recording's own sensor if the unit fits → "own_sensor"; else the facility's only sensor whose
unit it fits → "only_of_kind"; else none (kept, unattributed). "Degrees" alone is in the
attributed sensor's temperature unit, else Celsius. Values are converted by pint; a value that
is not plausible (below absolute zero, a percentage outside 0-100, over
`spoken_quantities.MAX_MAGNITUDE`) is dropped.

Bounds: at most `MAX_MENTIONS` mentions per call (`limit` may lower it), sentences cut at
`spoken_quantities.MAX_SENTENCE_TOKENS` words, one pass over the words.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import pint
from rapidfuzz import fuzz, process

from transcriber.clock import as_utc
from transcriber.results import Segment
from transcriber.schema import Attribution
from transcriber.spoken_quantities import (
    DIGIT_WORDS,
    Quantity,
    Token,
    quantities,
    sentences,
    tokens_of,
)
from transcriber.spoken_units import (
    CELSIUS,
    DEGREES,
    convert,
    fits,
    plausible,
    sensor_unit,
    unit_of,
    word_set,
)

MAX_MENTIONS = 1000
"""The most mentions one transcript yields; more is a transcript of numbers, not of readings."""
FUZZY_CUTOFF = 85.0
"""rapidfuzz ratio for a said word to match a description's word ("analyzer" ~ "analyser")."""
MAX_CODE_WORDS = 5
"""A code is said in at most this many words ("P T two oh one", "P.T. 2 01")."""
MAX_FILLER_WORDS = 4
FILLER_WORDS = word_set(
    "is was are were 's it's reads read reading readings shows showing showed says at of now "
    "currently about around approximately roughly nearly almost just sitting holding steady "
    "stable running still ="
)
"""Words that may stand between a named sensor and a unitless number that is its reading."""
KIND_WORDS = {
    "temperature": frozenset({"temperature", "temp"}),
    "pressure": frozenset({"pressure"}),
    "humidity": frozenset({"humidity", "humid", "rh"}),
}
_ALL_KIND_WORDS = frozenset().union(*KIND_WORDS.values())
STOPWORDS = word_set(
    "the a an of and or on in at to for is was are were be been it its it's this that these "
    "those with from by we our i you they there here now so but just about reading readings "
    "read reads shows showing showed says said currently right okay ok yes no not very all "
    "some then than as up down out over under also still only again high low hot cold"
)
_CODE_SHAPE = re.compile(r"[a-z]{1,4}-?[0-9]+[a-z]?", re.ASCII)


@dataclass(frozen=True)
class FacilitySensor:
    """One of the facility's sensors, as `extract` needs it."""

    id: int
    code: str
    kind: str
    unit: str
    description: str | None = None


@dataclass(frozen=True)
class Mention:
    """One reading said in the transcript."""

    segment: int
    """Index of the segment (in what `extract` was given) where the number was said."""
    start_s: float
    end_s: float
    """Seconds from the start of the audio, from the words of the number and its unit."""
    said_at: datetime
    """Wall-clock time (UTC) when the number was said: recorded_at + start_s."""
    text: str
    """The number and its unit as Whisper wrote them ("one hundred and ninety kilopascals")."""
    spoken_value: float
    spoken_unit: str | None
    """pint's name of the unit said ("kilopascal", "degree_Celsius", "percent"); "degrees"
    alone resolved to the sensor's unit or Celsius; None for a number said without a unit."""
    value_in_sensor_unit: float | None
    sensor_id: int | None
    sensor_code: str | None
    attribution: Attribution | None
    score: float | None
    """How well the sensor was named, 0-100 (100 for its code); None unless "named"."""
    sensor_text: str | None
    """The words that named the sensor; None unless "named"."""
    min_probability: float | None
    mean_probability: float | None
    """Whisper's probabilities of the number's and unit's words; None when it gave none."""


@dataclass(frozen=True)
class _Sensor:
    sensor: FacilitySensor
    unit: pint.Unit | None
    kind: str
    distinct: frozenset[str]
    total: float


@dataclass(frozen=True)
class _Ref:
    """A sensor named in a sentence."""

    sensor: _Sensor
    near: tuple[int, ...]
    """Token indices of its code or distinctive words: where it is named."""
    said: tuple[int, ...]
    """Every token index that names it (its kind word too)."""
    score: float
    strong: bool
    """Named well enough to own a number said without a unit."""


def _parts(text: str) -> list[str]:
    """A word's comparable parts: lower-case, "P-7" → "p7", "high-pressure" → "high",
    "pressure"; plurals' "s" off; stopwords out."""
    low = unicodedata.normalize("NFKC", text).lower().removesuffix("'s").removesuffix("’s")
    if _CODE_SHAPE.fullmatch(low):
        return [low.replace("-", "")]
    parts = []
    for part in re.split(r"[^0-9a-z]+", low):
        if len(part) > 3 and part.endswith("s") and not part.endswith("ss"):
            part = part[:-1]
        if len(part) >= 2 and part not in STOPWORDS:
            parts.append(part)
    return parts


def _code_key(code: str) -> str:
    return re.sub(r"[^0-9A-Z]", "", unicodedata.normalize("NFKC", code).upper())


class SensorIndex:
    """A facility's sensors, ready to be matched: code keys, description words and weights."""

    def __init__(self, sensors: Sequence[FacilitySensor]) -> None:
        count = max(len(sensors), 1)
        described = [
            (s, {p for w in (s.description or "").split() for p in _parts(w)}) for s in sensors
        ]
        document_frequency: dict[str, int] = {}
        kinds: dict[str, int] = {}
        for sensor, words in described:
            for word in words - _ALL_KIND_WORDS:
                document_frequency[word] = document_frequency.get(word, 0) + 1
            kinds[sensor.kind.lower()] = kinds.get(sensor.kind.lower(), 0) + 1
        self.idf = {w: math.log(1 + count / n) for w, n in document_frequency.items()}
        self.kind_idf = {k: math.log(1 + count / n) for k, n in kinds.items()}
        self.sensors: list[_Sensor] = []
        self.by_key: dict[str, list[_Sensor]] = {}
        self.by_word: dict[str, list[_Sensor]] = {}
        self.by_id: dict[int, _Sensor] = {}
        for sensor, words in described:
            kind = sensor.kind.lower()
            distinct = frozenset(words - _ALL_KIND_WORDS)
            total = sum(self.idf[w] for w in distinct) + self.kind_idf[kind]
            entry = _Sensor(sensor, sensor_unit(sensor.unit), kind, distinct, total)
            self.sensors.append(entry)
            self.by_id[sensor.id] = entry
            key = _code_key(sensor.code)
            if key and not key.isdigit():
                self.by_key.setdefault(key, []).append(entry)
            for word in distinct:
                self.by_word.setdefault(word, []).append(entry)
        self.prefixes = {key[:n] for key in self.by_key for n in range(1, len(key) + 1)}
        self.long_words = [w for w in self.by_word if len(w) > 4]
        self.kind_of_word = {w: k for k in kinds for w in KIND_WORDS.get(k, frozenset({k}))}


def _code_part(token: Token, first: bool) -> str:
    """What ``token`` adds to a code said in several words ("P.T." → "PT", "oh" → "0")."""
    text = token.text.removesuffix("'s").removesuffix("’s")
    key = _code_key(text)
    if not key:
        return ""
    has_digit = any(c.isdigit() for c in key)
    if has_digit and any(c.isalpha() for c in key):
        return key  # "PT-201", "pt201": letters and digits in one word
    if not first and token.low in DIGIT_WORDS:
        return str(DIGIT_WORDS[token.low])
    letters = [c for c in text if c.isalpha()]
    if letters and all(c.isupper() for c in letters):
        return key  # "PT", "P.T."
    return key if has_digit and not first else ""


def _code_refs(tokens: Sequence[Token], span: range, index: SensorIndex) -> list[_Ref]:
    refs: list[_Ref] = []
    i = span.start
    while i < span.stop:
        best: tuple[int, str] | None = None
        key = _code_part(tokens[i], first=True)
        if any(c.isalpha() for c in key):
            for j in range(i, min(i + MAX_CODE_WORDS, span.stop)):
                if j > i:
                    part = _code_part(tokens[j], first=False)
                    if not part:
                        break
                    key += part
                if key in index.by_key:
                    best = j, key
                if key not in index.prefixes or tokens[j].ends_clause:
                    break
        if best is None:
            i += 1
            continue
        said = tuple(range(i, best[0] + 1))
        refs += [_Ref(s, said, said, 100.0, True) for s in index.by_key[best[1]]]
        i = best[0] + 1
    return refs


def _description_refs(tokens: Sequence[Token], free: list[int], index: SensorIndex) -> list[_Ref]:
    matched: dict[str, tuple[float, list[int]]] = {}
    kinds_said: dict[str, list[int]] = {}
    for position in free:
        for part in _parts(tokens[position].text):
            kind = index.kind_of_word.get(part)
            if kind is not None:
                kinds_said.setdefault(kind, []).append(position)
            hits = [(part, 100.0)] if part in index.by_word else []
            if len(part) > 4:
                hits += [
                    (word, score)
                    for word, score, _ in process.extract(
                        part,
                        index.long_words,
                        scorer=fuzz.ratio,
                        score_cutoff=FUZZY_CUTOFF,
                        limit=None,
                    )
                    if word != part
                ]
            for word, score in hits:
                best, positions = matched.get(word, (0.0, []))
                matched[word] = max(best, score), [*positions, position]
    candidates = {id(s): s for word in matched for s in index.by_word[word]}
    refs = []
    for sensor in candidates.values():
        words = [w for w in sensor.distinct if w in matched]
        near = tuple(sorted({p for w in words for p in matched[w][1]}))
        # Its kind word counts where it is said with its words: "column head pressure".
        kind_at = [p for p in kinds_said.get(sensor.kind, []) if any(abs(p - n) <= 2 for n in near)]
        mass = sum(index.idf[w] * matched[w][0] / 100 for w in words)
        mass += index.kind_idf[sensor.kind] if kind_at else 0.0
        refs.append(
            _Ref(
                sensor,
                near,
                tuple(sorted({*near, *kind_at})),
                round(100 * mass / sensor.total, 1),
                len(words) >= 2 or bool(kind_at),
            )
        )
    return refs


def _distance(near: tuple[int, ...], q: Quantity) -> tuple[int, int]:
    """Named before the quantity (nearest first), else after it (nearest first)."""
    before = [q.first - p for p in near if p < q.first]
    return (0, min(before)) if before else (1, min(p - q.last for p in near))


def _named(q: Quantity, refs: list[_Ref], tokens: Sequence[Token]) -> _Ref | None:
    """The sensor named in the sentence that ``q`` belongs to, or None (none, or a tie)."""
    keyed: list[tuple[tuple[int, int], float, _Ref]] = []
    for ref in refs:
        unit = ref.sensor.unit
        if unit is None:
            continue
        if q.unit is not None:
            if fits(q.unit, unit):
                keyed.append((_distance(ref.near, q), -ref.score, ref))
            continue
        before = [p for p in ref.near if p < q.first]
        if not (q.standalone and ref.strong and before):
            continue
        # Between its last word and the number: its kind word and fillers ("is", "at") only.
        between = [k for k in range(max(before) + 1, q.first) if k not in ref.said]
        if len(between) <= MAX_FILLER_WORDS and all(tokens[k].low in FILLER_WORDS for k in between):
            # No score here: two sensors named by the same words ("Reactor R1") are a tie.
            keyed.append(((0, q.first - max(before)), 0.0, ref))
    if not keyed:
        return None
    keyed.sort(key=lambda k: (k[0], k[1]))
    first = keyed[0]
    tied = [k for k in keyed if k[:2] == first[:2] and k[2].sensor is not first[2].sensor]
    return None if tied else first[2]


def _in_sensor_unit(q: Quantity, unit: str | None, sensor: _Sensor) -> float | None:
    if sensor.unit is None:
        return None
    if unit is None:
        return q.value if plausible(q.value, sensor.unit) else None
    return convert(q.value, unit_of(unit), sensor.unit)


def _spoken_unit(q: Quantity, sensor: _Sensor | None) -> str | None:
    if q.unit == DEGREES:
        return str(sensor.unit) if sensor is not None and sensor.unit is not None else CELSIUS
    return q.unit


def _attribute(
    q: Quantity, refs: list[_Ref], tokens: Sequence[Token], index: SensorIndex, own: int | None
) -> tuple[_Sensor | None, Attribution | None, _Ref | None]:
    named = _named(q, refs, tokens)
    if named is not None:
        return named.sensor, "named", named
    if q.unit is None:
        return None, None, None
    fitting = [s for s in index.sensors if s.unit is not None and fits(q.unit, s.unit)]
    mine = index.by_id.get(own) if own is not None else None
    if mine is not None and mine in fitting:
        return mine, "own_sensor", None
    if len(fitting) == 1:
        return fitting[0], "only_of_kind", None
    return None, None, None


def _mention(
    q: Quantity,
    refs: list[_Ref],
    tokens: Sequence[Token],
    index: SensorIndex,
    at: datetime,
    own: int | None,
) -> Mention | None:
    sensor, how, ref = _attribute(q, refs, tokens, index, own)
    if q.unit is None and sensor is None:
        return None
    unit = _spoken_unit(q, sensor)
    if unit is not None and not plausible(q.value, unit_of(unit)):
        return None
    value = _in_sensor_unit(q, unit, sensor) if sensor is not None else None
    if value is None and sensor is not None:
        if q.unit is None:
            return None
        sensor, how, ref, unit = None, None, None, _spoken_unit(q, None)
    said = tokens[q.first : q.last + 1]
    probabilities = [t.probability for t in said if t.probability is not None]
    text = " ".join(t.said for t in said).rstrip(",.;:!?…")
    return Mention(
        segment=said[0].segment,
        start_s=said[0].start,
        end_s=said[-1].end,
        said_at=at + timedelta(seconds=said[0].start),
        text=text,
        spoken_value=q.value,
        spoken_unit=unit,
        value_in_sensor_unit=value,
        sensor_id=sensor.sensor.id if sensor else None,
        sensor_code=sensor.sensor.code if sensor else None,
        attribution=how,
        score=ref.score if ref else None,
        sensor_text=" ".join(tokens[p].said for p in ref.said).rstrip(",.;:!?…") if ref else None,
        min_probability=min(probabilities) if probabilities else None,
        mean_probability=math.fsum(probabilities) / len(probabilities) if probabilities else None,
    )


def extract(
    segments: Sequence[Segment],
    sensors: Sequence[FacilitySensor],
    *,
    recorded_at: datetime,
    own_sensor_id: int | None = None,
    limit: int = MAX_MENTIONS,
) -> list[Mention]:
    """The readings said in ``segments`` (a transcript, in time order), attributed to the
    facility's ``sensors``; ``recorded_at`` is when the audio starts, ``own_sensor_id`` the
    recording's own sensor (placement), ``limit`` at most `MAX_MENTIONS`."""
    limit = max(0, min(limit, MAX_MENTIONS))
    index = SensorIndex(sensors)
    tokens = tokens_of(segments)
    at = as_utc(recorded_at)
    mentions: list[Mention] = []
    for span in sentences(tokens):
        if len(mentions) >= limit:
            break
        refs = _code_refs(tokens, span, index)
        taken = {p for ref in refs for p in ref.said}
        found = quantities(tokens, span, taken)
        if not found:
            continue
        used = taken | {k for q in found for k in range(q.first, q.last + 1)}
        refs += _description_refs(tokens, [p for p in span if p not in used], index)
        for q in found:
            mention = _mention(q, refs, tokens, index, at, own_sensor_id)
            if mention is not None:
                mentions.append(mention)
                if len(mentions) >= limit:
                    break
    return mentions
