"""docs/architecture.md is the design of record: these tests keep it and the code in step.

Every module the page names exists, every module of the product is on the page, and each
module imports only what its place in the layers allows. Plus the rules the layers alone do
not say: no module over 600 lines, ``workers/`` never imports ``transcriber.cli``, the job path
never calls up into ``transcriber.ingest``, and nothing cites a design document the project
does not hold.
"""

from __future__ import annotations

import ast
import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
PACKAGES = ("transcriber", "workers")
MAX_LINES = 600


def _product_modules() -> list[Path]:
    """Every module of the product, as a path relative to the repository root."""
    return sorted(
        path.relative_to(ROOT)
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "migrations" not in path.parts
    )


def _module_name(path: Path) -> str:
    parts = list(path.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _layers() -> dict[str, tuple[int, int]]:
    """The modules of the page's layer tables: path → (layer, position on the page)."""
    layers: dict[str, tuple[int, int]] = {}
    layer = 0
    for line in DOC.read_text().splitlines():
        heading = re.match(r"\*\*(\d+)\. ", line)
        if heading:
            layer = int(heading.group(1))
            continue
        row = re.match(r"\| `((?:transcriber|workers)/[\w/]+\.py)` \|", line)
        if row and layer:
            layers[row.group(1)] = (layer, len(layers))
    return layers


def _imports(path: Path) -> set[str]:
    """The project modules ``path`` imports, anywhere in it (functions included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from transcriber.packing import plan` imports a module; `from x import name`
            # imports from one: both are counted as the most specific module that exists.
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES:
                found.add(_existing_module(name))
    return found


def _existing_module(dotted: str) -> str:
    parts = dotted.split(".")
    while parts:
        candidate = ROOT.joinpath(*parts)
        if candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file():
            return ".".join(parts)
        parts.pop()
    raise AssertionError(f"{dotted} names no module of the project")


def _path_of(module: str) -> str:
    candidate = ROOT.joinpath(*module.split("."))
    if candidate.with_suffix(".py").is_file():
        return str(candidate.with_suffix(".py").relative_to(ROOT))
    return str((candidate / "__init__.py").relative_to(ROOT))


def test_every_module_the_page_names_exists() -> None:
    text = DOC.read_text()
    paths = set(re.findall(r"`((?:transcriber|workers|tests|docker|migrations)/[\w/.-]+)`", text))
    dotted = set(re.findall(r"`((?:transcriber|workers)\.[\w.]+)`", text))
    assert paths, "the page names no module"
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"docs/architecture.md names files that do not exist: {missing}"
    for name in sorted(dotted):
        _existing_module(name)  # raises, naming it, when no module of that name exists


def test_every_module_is_on_the_page() -> None:
    listed = set(_layers())
    unlisted = [
        str(path)
        for path in _product_modules()
        if path.name != "__init__.py" and str(path) not in listed
    ]
    assert not unlisted, f"modules missing from docs/architecture.md's layer tables: {unlisted}"


def test_each_module_imports_only_what_its_layer_allows() -> None:
    layers = _layers()
    wrong: list[str] = []
    for path in _product_modules():
        if path.name == "__init__.py":
            continue  # package docstrings; they import nothing
        layer, position = layers[str(path)]
        for module in sorted(_imports(path)):
            target = _path_of(module)
            if target.endswith("__init__.py"):
                continue  # `import transcriber` for its version
            their_layer, their_position = layers[target]
            if (their_layer, their_position) >= (layer, position):
                wrong.append(f"{path} imports {module} (layer {their_layer}, not below)")
    assert not wrong, "imports against docs/architecture.md's layers:\n" + "\n".join(wrong)


def test_no_module_is_over_600_lines() -> None:
    long = {
        str(path): lines
        for path in _product_modules()
        if (lines := len((ROOT / path).read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these modules (over {MAX_LINES} lines): {long}"


@pytest.mark.parametrize(
    ("importer", "forbidden"),
    [
        ("workers", "transcriber.cli"),
        # The job path reads top to bottom: it never calls back up into the bucket side.
        ("transcriber/job_run.py", "transcriber.ingest"),
        ("transcriber/job_steps.py", "transcriber.ingest"),
        ("transcriber/packing", "transcriber.ingest"),
        ("transcriber/speech_model.py", "transcriber.ingest"),
        # The bucket side never runs jobs.
        ("transcriber/ingest", "transcriber.job_run"),
        ("transcriber/ingest", "transcriber.packing"),
    ],
)
def test_forbidden_imports(importer: str, forbidden: str) -> None:
    root = ROOT / importer
    paths = sorted(root.rglob("*.py")) if root.is_dir() else [root]
    assert paths
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in paths
        for module in _imports(path.relative_to(ROOT))
        if module == forbidden or module.startswith(forbidden + ".")
    ]
    assert not offenders, offenders


def test_only_the_cli_imports_celery_or_workers() -> None:
    offenders = []
    for path in _product_modules():
        if path.parts[0] != "transcriber" or path.name in ("cli.py", "__main__.py"):
            continue
        tree = ast.parse((ROOT / path).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            else:
                continue
            offenders += [
                f"{path}: {name}" for name in names if name.split(".")[0] in ("celery", "workers")
            ]
    assert not offenders, offenders


# Design and style documents that lived beside the repository, never in it: a clone must be
# complete on its own, and docs/architecture.md is the design of record.
OUTSIDE_DOCUMENTS = ("ARCHITECTURE.md", "STYLE.md")


def test_nothing_cites_a_design_document_outside_the_project() -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    this = str(Path(__file__).relative_to(ROOT))
    citing = {
        name: cited
        for name in tracked
        if name != this and (ROOT / name).is_file()
        for cited in OUTSIDE_DOCUMENTS
        if cited in (ROOT / name).read_text(errors="replace")
    }
    assert not citing, f"these cite documents outside the project: {citing}"
