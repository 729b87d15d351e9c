"""The speech model: faster-whisper, loaded once per process, and the one place its
results are consumed.

:func:`get_model` builds a model on first use and hands the same one out afterwards (per
process: a Celery worker forks its children first, and each child loads its own, lazily).
:func:`transcribe` runs it over decoded audio with
:class:`~transcriber.job_options.TranscribeOptions` and returns our own
:class:`~transcriber.results.Transcription`. (Named for what it holds: in this code base an
``engine`` is always a SQLAlchemy engine.)
"""

from __future__ import annotations

import gc
import os
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from transcriber import hallucinations
from transcriber.audio import DecodedAudio, Samples, decode
from transcriber.config import Settings
from transcriber.errors import ModelUnavailable, UnsupportedLanguage
from transcriber.job_options import TranscribeOptions
from transcriber.model_files import resolve
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
class ModelConfig:
    """What a loaded model depends on; one model is kept per distinct config."""

    model: str
    device: Literal["auto", "cpu", "cuda"]
    compute_type: str
    cpu_threads: int
    batch_size: int
    cache_dir: str

    @classmethod
    def from_settings(cls, settings: Settings, *, concurrency: int = 1) -> ModelConfig:
        """The configured model; CPU threads split the cores among ``concurrency`` processes."""
        threads = settings.cpu_threads or max(1, (os.cpu_count() or 1) // max(1, concurrency))
        return cls(
            model=settings.model,
            device=settings.device,
            compute_type=settings.compute_type,
            cpu_threads=threads,
            batch_size=settings.batch_size,
            cache_dir=settings.model_cache_dir,
        )


@dataclass
class LoadedModel:
    """A faster-whisper model and how it runs."""

    config: ModelConfig
    whisper: Any  # faster_whisper.WhisperModel
    pipeline: Any | None  # faster_whisper.BatchedInferencePipeline, on GPU
    device: str
    compute_type: str
    path: str

    @property
    def multilingual(self) -> bool:
        return bool(self.whisper.model.is_multilingual)


_lock = threading.Lock()
_loaded: dict[tuple[int, ModelConfig], LoadedModel] = {}


def _ctranslate2() -> Any:
    """CTranslate2, imported on first use: it loads its native libraries (and faster-whisper,
    which imports it, is loaded lazily for the same reason)."""
    import ctranslate2

    return ctranslate2


def resolve_device(device: str) -> str:
    """``auto`` is CUDA when CTranslate2 sees a GPU, else the CPU."""
    if device == "auto":
        return "cuda" if _ctranslate2().get_cuda_device_count() > 0 else "cpu"
    if device == "cuda" and _ctranslate2().get_cuda_device_count() == 0:
        raise ModelUnavailable("TRANSCRIBER_DEVICE=cuda, but CTranslate2 sees no CUDA device")
    return device


def resolve_compute_type(compute_type: str, device: str) -> str:
    """``auto`` is float16 on GPU and int8 on CPU (or the nearest the hardware supports)."""
    supported = _ctranslate2().get_supported_compute_types(device)
    if compute_type != "auto":
        if compute_type not in supported and compute_type != "default":
            raise ModelUnavailable(
                f"compute type {compute_type} is not supported on {device}: {sorted(supported)}"
            )
        return compute_type
    preferred = ("float16", "int8_float16", "float32") if device == "cuda" else ("int8", "float32")
    return str(next(c for c in (*preferred, "default") if c in supported or c == "default"))


def get_model(config: ModelConfig) -> LoadedModel:
    """The model for ``config``, loaded on the first call in this process and reused after."""
    key = (os.getpid(), config)
    with _lock:
        loaded = _loaded.get(key)
        if loaded is None:
            loaded = _loaded[key] = _load(config)
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


def _load(config: ModelConfig) -> LoadedModel:
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
    kwargs = options.model_kwargs()
    if loaded.pipeline is not None:
        generator, info = loaded.pipeline.transcribe(
            samples, batch_size=loaded.config.batch_size, **kwargs
        )
    else:
        generator, info = loaded.whisper.transcribe(samples, **kwargs)
    # The generator does the decoding; it is consumed here, in packing.windows.run_windows
    # and in the threads of packing.lockstep (which run_windows starts), nowhere else. What the
    # model says once the speech is over goes (transcriber.hallucinations); a packed run
    # does the same clip by clip, after the split.
    spoken = spoken_segments([to_segment(s) for s in generator])
    return hallucinations.drop_trailing(spoken), info


def spoken_segments(segments: list[Segment], *, check_repetition: bool = True) -> list[Segment]:
    """``segments`` less what Whisper hallucinates over silence and noise (see the
    thresholds); ``check_repetition=False`` leaves the repetition check to the caller."""
    return [s for s in segments if _is_speech(s, check_repetition=check_repetition)]


def repetitive(text: str) -> bool:
    """Whether ``text`` compresses like a repetition loop ("the the the …"), by the measure
    and threshold faster-whisper applies to each window's text."""
    data = text.encode("utf-8")
    return bool(data) and len(data) / len(zlib.compress(data)) > COMPRESSION_RATIO_THRESHOLD


def to_segment(
    raw: Any, decoder_times: Callable[[Any], tuple[float, float]] | None = None
) -> Segment:
    """Our :class:`Segment` of one of faster-whisper's; ``decoder_times`` gives its start
    and end where the aligned ones will not do (packed windows)."""
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
