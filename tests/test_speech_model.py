"""The engine with the real bundled model: same text as bare faster-whisper, file for file."""

from __future__ import annotations

import gc
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from transcriber import speech_model
from transcriber.audio import SAMPLE_RATE, DecodedAudio
from transcriber.config import Settings
from transcriber.errors import UnsupportedLanguage
from transcriber.job_options import TranscribeOptions
from transcriber.speech_model import (
    LoadedModel,
    ModelConfig,
    get_model,
    transcribe,
    transcribe_file,
)

DATA = Path(__file__).parent / "data"
SPEECH_FILES = sorted(p.name for p in DATA.glob("*.*") if p.name.startswith(("speech_", "two_")))
# Words the model gets right on each sentence (see tests/data/README.md), to be sure that the
# comparison with bare faster-whisper is between real transcripts, not two empty strings.
KEYWORDS = {"A": "valve", "B": "pump"}
SENTENCE_B = {
    "speech_44k_stereo.mp3",
    "speech_48k_mono.ogg",
    "speech_48k_stereo.webm",
    "speech_16k_mono.ogg",
    "two_party_stereo.wav",
}


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    return get_model(ModelConfig.from_settings(Settings()))


@pytest.mark.parametrize("name", SPEECH_FILES)
def test_text_equals_bare_faster_whisper(loaded: LoadedModel, name: str) -> None:
    path = DATA / name
    settings = Settings()
    ours = transcribe_file(path, TranscribeOptions.from_settings(settings), loaded, settings)
    # Bare faster-whisper: same model object, same options, its own decoding of the file.
    segments, _ = loaded.whisper.transcribe(
        str(path),
        beam_size=settings.beam_size,
        vad_filter=settings.vad_filter,
        word_timestamps=settings.word_timestamps,
    )
    bare = " ".join(s.text.strip() for s in segments)
    assert ours.text == bare
    keyword = KEYWORDS["B" if name in SENTENCE_B else "A"]
    assert keyword in ours.text.lower()


def test_result_carries_language_words_and_options(loaded: LoadedModel) -> None:
    options = TranscribeOptions(hotwords="relief valve, PT-201", initial_prompt="Plant log.")
    settings = Settings()
    result = transcribe_file(DATA / "speech_16k_mono.wav", options, loaded, settings)
    assert result.language == "en"
    assert result.model == "tiny.en"
    assert (result.device, result.compute_type) == ("cpu", "int8")
    assert result.options["hotwords"] == "relief valve, PT-201"
    assert result.options["initial_prompt"] == "Plant log."
    assert result.duration_s == pytest.approx(3.31, abs=0.05)
    words = [w for s in result.segments for w in s.words]
    assert len(words) >= 8
    starts = [w.start for w in words]
    assert starts == sorted(starts)
    assert all(0 <= w.start <= w.end <= result.duration_s + 0.1 for w in words)


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[ModelConfig]:
    """The configs of the models this process loads from now on (a spy on the loader)."""
    seen: list[ModelConfig] = []
    load = speech_model._load

    def counted(config: ModelConfig) -> LoadedModel:
        seen.append(config)
        return load(config)

    monkeypatch.setattr(speech_model, "_load", counted)
    return seen


def test_model_is_loaded_once_per_process(loads: list[ModelConfig]) -> None:
    config = ModelConfig.from_settings(Settings())
    first = get_model(config)
    before = len(loads)
    assert get_model(config) is first
    assert get_model(ModelConfig.from_settings(Settings())) is first
    assert len(loads) == before


def test_loading_a_model_freezes_what_the_process_holds(loads: list[ModelConfig]) -> None:
    """What exists once a model is loaded is left out of later collections (each decoded file
    ends with one), and still freed by reference counting when dropped."""
    gc.unfreeze()
    held = [[index] for index in range(20_000)]  # containers the collector tracks
    # A config no test has loaded yet (one more thread), so that this call loads a model.
    config = ModelConfig.from_settings(Settings())
    config = replace(config, cpu_threads=config.cpu_threads + 1)
    try:
        get_model(config)
        assert loads == [config]
        assert gc.get_freeze_count() >= len(held)
        frozen = gc.get_freeze_count()
        del held
        assert gc.get_freeze_count() < frozen - 10_000
    finally:
        gc.unfreeze()


def test_english_only_model_refuses_another_language(loaded: LoadedModel) -> None:
    audio = DecodedAudio((np.zeros(SAMPLE_RATE, np.float32),), SAMPLE_RATE, 1, "wav", "pcm")
    with pytest.raises(UnsupportedLanguage, match=r"English-only .* 'de'"):
        transcribe(audio, TranscribeOptions(language="de"), loaded)


def _noise(seconds: float, level: float) -> np.ndarray:
    rng = np.random.default_rng(42)
    return (rng.standard_normal(int(seconds * SAMPLE_RATE)) * level).astype(np.float32)


@pytest.mark.parametrize("vad_filter", [True, False])
@pytest.mark.parametrize(
    "kind",
    ["silence", "hiss", "loud noise"],
)
def test_silence_and_noise_give_an_empty_transcript(
    loaded: LoadedModel, kind: str, vad_filter: bool
) -> None:
    samples = {
        "silence": np.zeros(30 * SAMPLE_RATE, np.float32),
        "hiss": _noise(30, 0.01),
        "loud noise": _noise(30, 0.5),
    }[kind]
    audio = DecodedAudio((samples,), SAMPLE_RATE, 1, "wav", "pcm")
    result = transcribe(audio, TranscribeOptions(vad_filter=vad_filter), loaded)
    assert result.segments == ()
    assert result.text == ""


def test_split_channels_transcribe_each_speaker_on_its_own(loaded: LoadedModel) -> None:
    settings = Settings()
    split = transcribe_file(
        DATA / "two_party_stereo.wav", TranscribeOptions(channels="split"), loaded, settings
    )
    by_channel = {c: " ".join(s.text for s in split.segments if s.channel == c) for c in (0, 1)}
    assert "pump" in by_channel[0].lower()
    assert "electrician" in by_channel[1].lower()
    assert "electrician" not in by_channel[0].lower()
    assert [s.start for s in split.segments] == sorted(s.start for s in split.segments)
    mixed = transcribe_file(DATA / "two_party_stereo.wav", TranscribeOptions(), loaded, settings)
    assert {s.channel for s in mixed.segments} == {0}


def test_cpu_threads_are_shared_among_worker_processes() -> None:
    one = ModelConfig.from_settings(Settings(), concurrency=1)
    two = ModelConfig.from_settings(Settings(), concurrency=2)
    assert one.cpu_threads >= two.cpu_threads >= 1
    assert ModelConfig.from_settings(Settings(cpu_threads=3), concurrency=8).cpu_threads == 3


def test_auto_device_and_compute_type_on_this_cpu_machine(loaded: LoadedModel) -> None:
    # CI has no GPU: auto must pick the CPU with int8 and the sequential pipeline.
    assert speech_model.resolve_device("auto") == "cpu"
    assert speech_model.resolve_compute_type("auto", "cpu") == "int8"
    assert loaded.pipeline is None
