"""The README cannot drift from the code: its runnable shell blocks run here, and its SQL
cookbook runs against both databases."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
RUNNABLE = re.findall(r"^```sh runnable\n(.*?)^```", README, re.M | re.S)
COOKBOOK = README.split("## SQL cookbook", 1)[1].split("```sql\n", 1)[1].split("```", 1)[0]


def test_the_readme_has_runnable_blocks() -> None:
    assert RUNNABLE, "mark the README's try-it blocks with ```sh runnable"


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda b: b.splitlines()[0][:40])
def test_runnable_block(block: str, tmp_path: Path) -> None:
    """Each block runs as in a new shell at the repository's root: the environment has no
    TRANSCRIBER_ settings and no virtual environment on PATH (the block activates it)."""
    (tmp_path / "tests").symlink_to(ROOT / "tests")
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRANSCRIBER_")}
    venv_bin = str(Path(sys.prefix) / "bin")
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, f"README block failed:\n{block}\n{done.stdout}\n{done.stderr}"


@pytest.mark.parametrize("query", [q.strip() for q in COOKBOOK.split(";") if q.strip()])
def test_cookbook_query_runs(db: Engine, query: str) -> None:
    with db.connect() as conn:
        conn.execute(text(query)).fetchall()
