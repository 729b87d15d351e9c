"""Accuracy on real and synthetic speech: the service's decoding against bare faster-whisper,
with and without a facility's vocabulary, alone and packed; WER, codes spelled the plant's
way, and time, all measured side by side in one process.

Corpora:

- **real**: every recording of the real-speech folders (tests/support/speech.py: JFK from the
  shared data, plus ``BENCH_REAL_SPEECH``), human speech with reference texts;
- **terms**: notes that name houston-bay's sensors (flite and espeak-ng, corpus.term_notes);
- **plain**: operator notes that name none of them (flite, corpus.spoken_notes).

Every file is decoded as if it were placed at houston-bay (the demo facility): the service's
default gives it the facility's vocabulary as hotwords. The variants:

- **bare faster-whisper**: the same model, ``transcribe(audio, beam_size=5)``, nothing else;
- **service default**: the service's engine with the facility's vocabulary as hotwords and
  both fixes of transcriber.hallucinations (the padding after the speech is not decoded;
  what the model still says after the speech is dropped);
- **hotwords off** (``TRANSCRIBER_FACILITY_HOTWORDS=false``, or audio at no facility);
- **before the fixes**: hotwords, faster-whisper's own loop, nothing dropped;
- each fix alone, and two fixes tried: the codes alone as hotwords; the vocabulary as an
  initial prompt instead of hotwords.

Packing: every clip short enough to share a window runs packed (as the worker packs them:
transcriber.packing.packed_jobs.clip_segments) and is compared with the same clips run alone. WER is
jiwer's, after Whisper's English text normaliser on both sides (numbers as digits, spelling
unified, no punctuation).
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from unittest import mock

import jiwer
from whisper_normalizer.english import EnglishTextNormalizer

from tests.bench.corpus import TERMS_FACILITY, spoken_notes, term_notes, terms_vocabulary
from tests.support import speech as real_speech
from transcriber import hallucinations, speech_model
from transcriber.audio import DecodedAudio, decode
from transcriber.config import Settings
from transcriber.job_options import TranscribeOptions
from transcriber.packing import packed_jobs
from transcriber.packing import plan as packing
from transcriber.packing.windows import run_windows, speech
from transcriber.results import Segment

THREADS = 2
CORPORA = ("real", "terms", "plain")


@dataclass(frozen=True)
class Item:
    corpus: str
    name: str
    text: str
    codes: tuple[str, ...]
    audio: DecodedAudio


@dataclass
class Decoded:
    """One variant's segments for each item (raw: before any drop), and its seconds."""

    segments: list[list[Segment]]
    seconds: list[float]


def _corpus(quick: bool) -> list[Item]:
    items: list[Item] = []
    for folder in real_speech.folders():
        for rec in real_speech.recordings(folder):
            audio = decode(rec.path, max_bytes=1 << 30, max_seconds=3600)
            items.append(Item("real", rec.path.name, rec.text, (), audio))
        if quick:
            break
    if real_speech.JFK.is_file():
        # The JFK sentence cut at its pauses: real short utterances for packing.
        jfk = decode(real_speech.JFK, max_bytes=1 << 30, max_seconds=3600)
        for n, (samples, text) in enumerate(real_speech.jfk_utterances(jfk.channels[0], 16000)):
            cut = replace(jfk, channels=(samples,))
            items.append(Item("real", f"jfk-{n + 1}", text, (), cut))
    count = 12 if quick else 48
    for note in term_notes(count, prefix="terms"):
        audio = _decoded(note.clip.data, note.clip.key)
        items.append(Item("terms", note.clip.key, note.text, note.codes, audio))
    for spoken in spoken_notes(count, prefix="plain"):
        audio = _decoded(spoken.clip.data, spoken.clip.key)
        items.append(Item("plain", spoken.clip.key, spoken.text, (), audio))
    return items


def _decoded(data: bytes, key: str) -> DecodedAudio:
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / key.replace("/", "_")
        path.write_bytes(data)
        return decode(path, max_bytes=1 << 30, max_seconds=3600)


@contextmanager
def _nothing_dropped() -> Iterator[None]:
    """Nothing dropped after the fact (transcriber.hallucinations.drop_trailing)."""
    keep: Callable[[Sequence[Segment]], list[Segment]] = list
    # The engine and the packed run call it through the module, so patching it there is
    # patching both.
    with mock.patch.object(hallucinations, "drop_trailing", keep):
        yield


@contextmanager
def _plain_loop(loaded: speech_model.LoadedModel) -> Iterator[None]:
    """faster-whisper's own loop, which decodes the padding after the speech too (the
    service's model is its subclass, :func:`transcriber.hallucinations.whisper_model`)."""
    from faster_whisper import WhisperModel

    ours = loaded.whisper.__class__
    loaded.whisper.__class__ = WhisperModel
    try:
        yield
    finally:
        loaded.whisper.__class__ = ours


def _bare(loaded: speech_model.LoadedModel, items: list[Item]) -> Decoded:
    """faster-whisper itself: its own class and loop, its defaults (no VAD, no word
    timestamps) but for the beam of 5 the service uses."""
    out = Decoded([], [])
    with _plain_loop(loaded):
        for item in items:
            started = time.perf_counter()
            generator, _ = loaded.whisper.transcribe(item.audio.channels[0], beam_size=5)
            found = [Segment(start=s.start, end=s.end, text=s.text.strip()) for s in generator]
            out.seconds.append(time.perf_counter() - started)
            out.segments.append(found)
    return out


def _service(
    loaded: speech_model.LoadedModel,
    items: list[Item],
    options: TranscribeOptions,
    *,
    before_fix: bool = False,
) -> Decoded:
    """The service's decoding of every item, before anything is dropped after the fact;
    ``before_fix``: through faster-whisper's own loop, as before the fix."""
    out = Decoded([], [])
    with _nothing_dropped(), _plain_loop(loaded) if before_fix else nullcontext():
        for item in items:
            result = speech_model.transcribe(item.audio, options, loaded)
            out.seconds.append(result.processing_s or 0.0)
            out.segments.append(list(result.segments))
    return out


@dataclass
class Packed:
    """Each packable item's segments from its window (or alone, where the worker would run
    it alone), the seconds of the whole packed run, and how many clips ran alone."""

    segments: dict[int, list[Segment]]
    seconds: float
    alone: int


def _packed(
    loaded: speech_model.LoadedModel,
    items: list[Item],
    options: TranscribeOptions,
    alone: Decoded,
) -> Packed:
    """The items that fit a window, packed as the worker packs them; a clip the worker would
    run alone takes its alone result and time."""
    fits = [i for i, item in enumerate(items) if packing.fits(item.audio.duration_s, 30.0)]
    started = time.perf_counter()
    heard = [speech(items[i].audio.channels[0], options) for i in fits]
    windows = packing.plan([h.duration_s for h in heard], 30.0)
    shared = [w for w in windows if len(w.clips) > 1]
    samples = [packing.join(w, [h.samples for h in heard]) for w in shared]
    window_options = replace(options, vad_filter=False, word_timestamps=True)
    results = run_windows(loaded, samples, window_options)
    out: dict[int, list[Segment]] = {}
    for window, result in zip(shared, results, strict=True):
        assert not isinstance(result, Exception), result
        given = packed_jobs.clip_segments(window, result[0], heard)
        for placed in window.clips:
            found = given[placed.index]
            if not isinstance(found, str):
                out[fits[placed.index]] = found
    seconds = time.perf_counter() - started
    ran_alone = [i for i in fits if i not in out]
    for i in ran_alone:
        segments = alone.segments[i]
        out[i] = hallucinations.drop_trailing(segments)
        seconds += alone.seconds[i]
    return Packed(out, seconds, len(ran_alone))


_whisper_normaliser = EnglishTextNormalizer()


def _normalise(text: str) -> str:
    """Whisper's English normalisation, less what it leaves of punctuation ("regard..."
    comes out as "regard ."), which is not a word."""
    words = _whisper_normaliser(text).split()
    return " ".join(word for word in words if any(ch.isalnum() for ch in word))


def _text(segments: Sequence[Segment]) -> str:
    return " ".join(segment.text for segment in segments)


@dataclass(frozen=True)
class Score:
    wer: float
    codes: tuple[int, int]  # spelled the plant's way, of all named
    trailing: int  # files with words after their reference's last word
    seconds: float


def _score(items: list[Item], texts: dict[int, str], seconds: float) -> Score:
    chosen = sorted(texts)
    refs = [_normalise(items[i].text) for i in chosen]
    hyps = [_normalise(texts[i]) for i in chosen]
    words = jiwer.process_words(refs, hyps)
    trailing = sum(
        1
        for chunks, hyp in zip(words.alignments, words.hypotheses, strict=True)
        if hyp and chunks and chunks[-1].type == "insert"
    )
    named = sum(len(items[i].codes) for i in chosen)
    spelled = sum(
        1
        for i in chosen
        for code in items[i].codes
        if re.search(rf"(?<![A-Za-z0-9]){re.escape(code)}(?![0-9])", texts[i])
    )
    return Score(float(words.wer), (spelled, named), trailing, seconds)


def _scores(
    items: list[Item], texts: dict[int, str], seconds: dict[int, float]
) -> dict[str, Score]:
    out = {}
    for corpus in CORPORA:
        chosen = {i: t for i, t in texts.items() if items[i].corpus == corpus}
        if chosen:
            out[corpus] = _score(items, chosen, sum(seconds[i] for i in chosen))
    return out


def _row(name: str, scores: dict[str, Score]) -> str:
    cells = []
    for corpus in CORPORA:
        score = scores.get(corpus)
        if score is None:
            cells += ["–", "–"]
            continue
        codes = f"{score.codes[0]}/{score.codes[1]}, " if corpus == "terms" else ""
        cells.append(f"{score.wer:.3f} ({codes}{score.trailing} trailing)")
        cells.append(f"{score.seconds:.1f} s")
    return f"| {name} | " + " | ".join(cells) + " |"


def run(quick: bool) -> str:
    settings = Settings(cpu_threads=THREADS)
    loaded = speech_model.get_model(speech_model.ModelConfig.from_settings(settings))
    items = _corpus(quick)
    full, codes = terms_vocabulary(), terms_vocabulary(codes_only=True)
    base = TranscribeOptions.from_settings(settings)
    hot = replace(base, hotwords=full)
    print(f"accuracy: {len(items)} files; vocabulary {len(full)} characters", flush=True)

    decoded: dict[str, Decoded] = {"bare": _bare(loaded, items)}
    for name, options, before_fix in (
        ("off", base, False),
        ("hot", hot, False),
        ("before", hot, True),
        ("codes", replace(base, hotwords=codes), False),
        ("prompt", replace(base, initial_prompt=full), False),
    ):
        decoded[name] = _service(loaded, items, options, before_fix=before_fix)
        print(f"accuracy: {name} {sum(decoded[name].seconds):.1f} s", flush=True)

    def scores(name: str, drop: bool) -> dict[str, Score]:
        found = decoded[name].segments
        texts = {
            i: _text(hallucinations.drop_trailing(s) if drop else s) for i, s in enumerate(found)
        }
        return _scores(items, texts, dict(enumerate(decoded[name].seconds)))

    rows = [
        ("bare faster-whisper (beam 5)", scores("bare", False)),
        ("**service default**: facility hotwords, both fixes", scores("hot", True)),
        ("hotwords off (`FACILITY_HOTWORDS=false`), both fixes", scores("off", True)),
        ("before the fixes: facility hotwords", scores("before", False)),
        ("fix 1 alone: trailing hallucinations dropped", scores("before", True)),
        ("fix 2 alone: the padding after the speech not decoded", scores("hot", False)),
        ("tried: codes alone as hotwords, both fixes", scores("codes", True)),
        ("tried: vocabulary as initial prompt, both fixes", scores("prompt", True)),
    ]

    packed_rows = []
    for label, name, options in (("hotwords off", "off", base), ("service default", "hot", hot)):
        alone = decoded[name]
        packed = _packed(loaded, items, options, alone)
        packed_texts = {i: _text(s) for i, s in packed.segments.items()}
        alone_texts = {
            i: _text(hallucinations.drop_trailing(alone.segments[i])) for i in packed.segments
        }
        alone_s = {i: alone.seconds[i] for i in packed.segments}
        # One packed run's time, spread over the clips by their length, for the columns.
        total_audio = sum(items[i].audio.duration_s for i in packed.segments)
        share = {
            i: packed.seconds * items[i].audio.duration_s / total_audio for i in packed.segments
        }
        packed_rows.append((f"{label}, alone", _scores(items, alone_texts, alone_s)))
        packed_rows.append(
            (
                f"{label}, packed ({packed.alone} of {len(packed.segments)} ran alone)",
                _scores(items, packed_texts, share),
            )
        )
        print(f"accuracy: packed {label} {packed.seconds:.1f} s", flush=True)
    return _report(items, rows, packed_rows, full)


def _describe(items: list[Item]) -> str:
    parts = []
    for corpus in CORPORA:
        chosen = [i for i in items if i.corpus == corpus]
        if chosen:
            seconds = sum(i.audio.duration_s for i in chosen)
            parts.append(f"{corpus}: {len(chosen)} files, {seconds:.0f} s")
    return "; ".join(parts)


def _report(
    items: list[Item],
    rows: list[tuple[str, dict[str, Score]]],
    packed_rows: list[tuple[str, dict[str, Score]]],
    full: str,
) -> str:
    header = (
        "| Decoding | real: WER | time | terms: WER (codes spelled) | time "
        "| plain: WER | time |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    real_names = sorted({i.name for i in items if i.corpus == "real"})
    return "\n".join(
        [
            "## Accuracy on real and synthetic speech",
            "",
            f"{_describe(items)}. Real: {', '.join(real_names)}. Terms: notes that name "
            f'{TERMS_FACILITY}\'s sensors by code ("P T two oh one") or description, flite '
            "and espeak-ng in turn; plain: flite operator notes that name none of them. "
            "Every file as if placed at "
            f"{TERMS_FACILITY}, whose vocabulary ({len(full)} characters) the service gives "
            "as hotwords. tiny.en int8, beam 5, two CPU threads, one process, in one run. "
            "WER after Whisper's English normaliser on both sides; *trailing*: files "
            "whose transcript goes on after the reference's last word; time: decoding "
            "seconds of the corpus.",
            "",
            header,
            *(_row(name, scores) for name, scores in rows),
            "",
            "Packed: the files that fit a 30 s window, packed as the worker packs them "
            "(`transcriber.packing.packed_jobs.clip_segments`, the same checks and drops) "
            "against the same files alone; a clip the worker would run alone counts with its "
            "alone result and time. Packed time is the whole packed run, shared by clip length.",
            "",
            header,
            *(_row(name, scores) for name, scores in packed_rows),
            "",
            "Reproduce: `make bench` (this section alone, printed: "
            "`python -m tests.bench.run --only accuracy`); more real speech with "
            "`make bench REAL_SPEECH=DIR` (a folder of recordings and their `refs.json`).",
        ]
    )
