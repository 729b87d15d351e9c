"""faster-whisper, loaded once per process, and the one place its results are consumed.

:func:`get_model` builds a model on first use and hands the same one out afterwards (per
process: a Celery worker forks its children first, and each child loads its own, lazily).
:func:`transcribe` runs it over decoded audio with :class:`TranscribeOptions` and returns our
own :class:`~transcriber.results.Transcription`.
"""

from __future__ import annotations

import gc
import os
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

from transcriber import hallucinations, lockstep, packing
from transcriber.audio import DecodedAudio, Samples, decode
from transcriber.config import Settings
from transcriber.errors import ModelUnavailable, UnsupportedLanguage
from transcriber.models import resolve
from transcriber.results import Segment, Transcription, Word

# Whisper's own thresholds, applied again to what comes out: a segment the model itself
# thinks is probably not speech, and that it decoded with low confidence, is dropped. This is
# what keeps 30 s of silence or noise from turning into "Thank you." when the VAD is off or
# lets noise through.
NO_SPEECH_THRESHOLD = 0.6
LOGPROB_THRESHOLD = -1.0
# Past this the model is sure there is no speech whatever it decoded ("You" over 30 s of
# digital silence comes with 0.95).
NO_SPEECH_CERTAIN = 0.9
# Repetition loops ("the the the …") compress far better than speech.
COMPRESSION_RATIO_THRESHOLD = 2.4


@dataclass(frozen=True)
class EngineConfig:
    """What a loaded model depends on; one model is kept per distinct config."""

    model: str
    device: Literal["auto", "cpu", "cuda"]
    compute_type: str
    cpu_threads: int
    batch_size: int
    cache_dir: str

    @classmethod
    def from_settings(cls, settings: Settings, *, concurrency: int = 1) -> EngineConfig:
        """The configured engine; CPU threads split the cores among ``concurrency`` processes."""
        threads = settings.cpu_threads or max(1, (os.cpu_count() or 1) // max(1, concurrency))
        return cls(
            model=settings.model,
            device=settings.device,
            compute_type=settings.compute_type,
            cpu_threads=threads,
            batch_size=settings.batch_size,
            cache_dir=settings.model_cache_dir,
        )


@dataclass(frozen=True)
class TranscribeOptions:
    """Decoding options; recorded with each job (``transcription_jobs.options``)."""

    language: str | None = None
    beam_size: int = 5
    vad_filter: bool = True
    word_timestamps: bool = True
    initial_prompt: str | None = None
    hotwords: str | None = None
    channels: Literal["mix", "split"] = "mix"

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> TranscribeOptions:
        options = cls(
            language=settings.language or None,
            beam_size=settings.beam_size,
            vad_filter=settings.vad_filter,
            word_timestamps=settings.word_timestamps,
            initial_prompt=settings.initial_prompt or None,
            hotwords=settings.hotwords or None,
            channels=settings.channels,
        )
        return replace(options, **overrides) if overrides else options

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LoadedModel:
    """A faster-whisper model and how it runs."""

    config: EngineConfig
    whisper: Any  # faster_whisper.WhisperModel
    pipeline: Any | None  # faster_whisper.BatchedInferencePipeline, on GPU
    device: str
    compute_type: str
    path: str

    @property
    def multilingual(self) -> bool:
        return bool(self.whisper.model.is_multilingual)


_lock = threading.Lock()
_loaded: dict[tuple[int, EngineConfig], LoadedModel] = {}
load_count = 0  # how many models this process has loaded (tests check reuse)


def resolve_device(device: str) -> str:
    """``auto`` is CUDA when CTranslate2 sees a GPU, else the CPU."""
    import ctranslate2

    if device == "auto":
        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    if device == "cuda" and ctranslate2.get_cuda_device_count() == 0:
        raise ModelUnavailable("TRANSCRIBER_DEVICE=cuda, but CTranslate2 sees no CUDA device")
    return device


def resolve_compute_type(compute_type: str, device: str) -> str:
    """``auto`` is float16 on GPU and int8 on CPU (or the nearest the hardware supports)."""
    import ctranslate2

    supported = ctranslate2.get_supported_compute_types(device)
    if compute_type != "auto":
        if compute_type not in supported and compute_type != "default":
            raise ModelUnavailable(
                f"compute type {compute_type} is not supported on {device}: {sorted(supported)}"
            )
        return compute_type
    preferred = ("float16", "int8_float16", "float32") if device == "cuda" else ("int8", "float32")
    return str(next(c for c in (*preferred, "default") if c in supported or c == "default"))


def get_model(config: EngineConfig) -> LoadedModel:
    """The model for ``config``, loaded on the first call in this process and reused after."""
    global load_count
    key = (os.getpid(), config)
    with _lock:
        loaded = _loaded.get(key)
        if loaded is None:
            loaded = _loaded[key] = _load(config)
            load_count += 1
            _freeze_long_lived()
        return loaded


def _freeze_long_lived() -> None:
    """Take every object that exists once a model is loaded out of later garbage collections.

    Decoding a file ends with a full collection (:func:`transcriber.audio.decode`, for PyAV's
    resampler, faster-whisper issue #390), and a full collection walks every object the
    process holds: in a Celery worker some 150,000 (Celery, kombu, SQLAlchemy's mappers,
    botocore's service models), four times what a bare faster-whisper process holds. That
    walk took 0.15-0.2 s of every job on two cores, most of what the service added to bare
    faster-whisper (py-spy on a worker; tests/bench/overhead.py has the figures). By the time
    a model is loaded the process has built what it keeps until it exits, so that is frozen,
    and collections walk only what jobs create. Reference counting still frees a frozen
    object once it is dropped; only a reference cycle among frozen objects would never be
    collected.
    """
    gc.collect()  # so that no garbage of the start-up is frozen with the rest
    gc.freeze()


def _load(config: EngineConfig) -> LoadedModel:
    from faster_whisper import BatchedInferencePipeline

    path = resolve(config.model, Path(config.cache_dir))
    device = resolve_device(config.device)
    compute_type = resolve_compute_type(config.compute_type, device)
    try:
        whisper = hallucinations.whisper_model()(
            path,
            device=device,
            compute_type=compute_type,
            cpu_threads=config.cpu_threads,
            local_files_only=True,
        )
    except (RuntimeError, ValueError, OSError) as exc:
        raise ModelUnavailable(f"cannot load model {config.model!r} from {path}: {exc}") from exc
    # The batched pipeline pays off on a GPU; on CPU the sequential one is as fast and keeps
    # the exact results of bare faster-whisper.
    pipeline = BatchedInferencePipeline(model=whisper) if device == "cuda" else None
    return LoadedModel(config, whisper, pipeline, device, compute_type, path)


def check_language(loaded: LoadedModel, language: str | None) -> None:
    """Refuse a language the model cannot transcribe, instead of silently using English."""
    if language is None:
        return
    supported = loaded.whisper.supported_languages
    if language not in supported:
        if not loaded.multilingual:
            raise UnsupportedLanguage(
                f"model {loaded.config.model} is English-only and cannot transcribe "
                f"language {language!r}; use a multilingual model (base, small, large-v3) "
                "or leave TRANSCRIBER_LANGUAGE empty"
            )
        raise UnsupportedLanguage(f"language {language!r} is not one Whisper knows")


def transcribe(
    audio: DecodedAudio, options: TranscribeOptions, loaded: LoadedModel
) -> Transcription:
    """Transcribe decoded audio: the mix, or each channel on its own with ``channels=split``."""
    check_language(loaded, options.language)
    started = time.perf_counter()
    tracks = audio.channels if options.channels == "split" else audio.channels[:1]
    segments: list[Segment] = []
    language: str | None = options.language
    probability: float | None = None
    for channel, samples in enumerate(tracks):
        found, info = run_model(loaded, samples, options)
        segments.extend(replace(s, channel=channel) for s in found)
        # With split channels, the most confident channel's language stands for the file.
        if probability is None or (info.language_probability or 0) > probability:
            language, probability = info.language, info.language_probability
    segments.sort(key=lambda s: (s.start, s.channel))
    return Transcription(
        language=language,
        language_probability=probability,
        duration_s=audio.duration_s,
        segments=tuple(segments),
        model=loaded.config.model,
        processing_s=time.perf_counter() - started,
        options=options.as_dict(),
        device=loaded.device,
        compute_type=loaded.compute_type,
    )


def transcribe_file(
    path: Path, options: TranscribeOptions, loaded: LoadedModel, settings: Settings
) -> Transcription:
    """Decode ``path`` within the configured limits and transcribe it."""
    audio = decode(
        path,
        max_bytes=settings.max_audio_bytes,
        max_seconds=settings.max_audio_seconds,
        split_channels=options.channels == "split",
    )
    return transcribe(audio, options, loaded)


def run_model(
    loaded: LoadedModel, samples: Samples, options: TranscribeOptions
) -> tuple[list[Segment], Any]:
    """The speech segments the model finds in ``samples`` (one track), and faster-whisper's
    ``TranscriptionInfo`` (language, probability)."""
    kwargs = _model_kwargs(options, packed=False)
    if loaded.pipeline is not None:
        generator, info = loaded.pipeline.transcribe(
            samples, batch_size=loaded.config.batch_size, **kwargs
        )
    else:
        generator, info = loaded.whisper.transcribe(samples, **kwargs)
    # The generator does the decoding; it is consumed here, in run_windows and in the
    # threads of transcriber.lockstep (which run_windows starts), nowhere else. What the
    # model says once the speech is over goes (transcriber.hallucinations); a packed run
    # does the same clip by clip, after the split.
    spoken = _spoken([_segment(s) for s in generator], packed=False)
    return hallucinations.drop_trailing(spoken), info


def speech(samples: Samples, options: TranscribeOptions) -> packing.Speech:
    """What of ``samples`` the model hears: with the VAD on, the stretches in which Silero
    finds speech, by faster-whisper's own defaults, as ``transcribe`` would cut them."""
    if not options.vad_filter:
        return packing.Speech.whole(samples)
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    chunks = get_speech_timestamps(samples, VadOptions())
    return packing.Speech.cut(samples, [(c["start"], c["end"]) for c in chunks])


def run_windows(
    loaded: LoadedModel, windows: Sequence[Samples], options: TranscribeOptions
) -> list[tuple[list[Segment], Any] | Exception]:
    """The speech segments in each of several packed windows (clips laid end to end, their
    VAD already applied: ``options.vad_filter`` is not), each segment's ``start`` and
    ``end`` the decoder's own times (see :func:`transcriber.packing.split`), with
    faster-whisper's info; or the exception that window's run raised.

    The windows go through faster-whisper's sequential loop, which makes a second pass
    over what a first one stopped short of (the batched pipeline decodes each window once
    and kept whole clips out of packed windows: WER 0.160 against 0.083 on the same
    windows). On the CPU they go side by side, their decoding batched
    (:mod:`transcriber.lockstep`); on a GPU, where that batching is not yet measured, one
    after another.
    """
    kwargs = _model_kwargs(options, packed=True)
    if loaded.device != "cpu" or len(windows) < 2:
        results: list[tuple[list[Any], Any] | Exception] = []
        for samples in windows:
            try:
                generator, info = loaded.whisper.transcribe(samples, **kwargs)
                results.append((list(generator), info))
            except Exception as exc:
                results.append(exc)
    else:
        results = lockstep.transcribe_side_by_side(loaded.whisper, windows, kwargs)
    decoded = partial(_segment, decoder_times=_DecoderTimes(loaded.whisper))
    return [
        result
        if isinstance(result, Exception)
        else (_spoken([decoded(s) for s in result[0]], packed=True), result[1])
        for result in results
    ]


class _DecoderTimes:
    """A segment's start and end as the decoder gave them, from its timestamp tokens
    (faster-whisper moves them to the first and last word's times when it aligns words)."""

    def __init__(self, whisper: Any) -> None:
        self._first = whisper.hf_tokenizer.token_to_id("<|notimestamps|>") + 1
        self._precision = float(whisper.time_precision)
        self._frame = float(whisper.feature_extractor.time_per_frame)

    def __call__(self, raw: Any) -> tuple[float, float]:
        stamps = [t for t in raw.tokens if t >= self._first]
        if len(stamps) < 2:  # not expected of a timestamped decoding; the aligned times then
            return float(raw.start), float(raw.end)
        offset = raw.seek * self._frame
        first, last = (
            (t - self._first) * self._precision + offset for t in (stamps[0], stamps[-1])
        )
        return round(first, 3), round(last, 3)


def _model_kwargs(options: TranscribeOptions, *, packed: bool) -> dict[str, Any]:
    """faster-whisper's ``transcribe`` arguments for ``options``.

    ``packed``: the samples are several clips laid end to end. The repetition check is then
    left to the caller, clip by clip (:func:`repetitive`): faster-whisper measures the
    compression ratio of a whole window's text, and clips that say the same thing (one
    alarm call recorded by five sensors) would read as a repetition loop, be decoded again
    at random temperatures and then dropped. And a second pass over the part of a window
    that the first one stopped short of is not given the first pass's text as its prompt:
    that text is other clips' words, no context for the clip ahead; without it every second
    pass has the same prompt, and the second passes of all windows are decoded as one
    batch (:mod:`transcriber.lockstep`; 64 notes: 9.2 s against 10.8 s, WER 0.083 against
    0.079, both below the 0.101 of the notes run alone).
    """
    kwargs: dict[str, Any] = {
        "language": options.language,
        "beam_size": options.beam_size,
        "vad_filter": options.vad_filter,
        "word_timestamps": options.word_timestamps,
        "initial_prompt": options.initial_prompt,
        "hotwords": options.hotwords,
    }
    if packed:
        kwargs["compression_ratio_threshold"] = None
        kwargs["condition_on_previous_text"] = False
    return kwargs


def _spoken(segments: list[Segment], *, packed: bool) -> list[Segment]:
    return [s for s in segments if _is_speech(s, check_repetition=not packed)]


def repetitive(text: str) -> bool:
    """Whether ``text`` compresses like a repetition loop ("the the the …"), by the measure
    and threshold faster-whisper applies to each window's text."""
    data = text.encode("utf-8")
    return bool(data) and len(data) / len(zlib.compress(data)) > COMPRESSION_RATIO_THRESHOLD


def _segment(raw: Any, decoder_times: _DecoderTimes | None = None) -> Segment:
    words = tuple(
        Word(start=w.start, end=w.end, word=w.word, probability=w.probability)
        for w in (raw.words or ())
    )
    start, end = (raw.start, raw.end) if decoder_times is None else decoder_times(raw)
    return Segment(
        start=start,
        end=end,
        text=raw.text.strip(),
        avg_logprob=raw.avg_logprob,
        no_speech_prob=raw.no_speech_prob,
        compression_ratio=raw.compression_ratio,
        words=words,
    )


def _is_speech(segment: Segment, *, check_repetition: bool = True) -> bool:
    """False for what Whisper hallucinates over silence and noise (see the thresholds)."""
    if not any(ch.isalnum() for ch in segment.text):
        return False  # " ." and "..." are what noise decodes to, never words
    if check_repetition and (segment.compression_ratio or 0.0) > COMPRESSION_RATIO_THRESHOLD:
        return False
    no_speech = segment.no_speech_prob or 0.0
    if no_speech > NO_SPEECH_CERTAIN:
        return False
    logprob = segment.avg_logprob if segment.avg_logprob is not None else 0.0
    return not (no_speech > NO_SPEECH_THRESHOLD and logprob < LOGPROB_THRESHOLD)
