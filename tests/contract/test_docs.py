"""Docs that cannot drift: the site builds with --strict, its references are generated
from the code and complete, result tables are included from ``benchmarks/results``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from transferpilot.cli import app
from transferpilot.config import Params

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
PAGES = sorted((ROOT / "docs").rglob("*.md"))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = os.environ | {"NO_MKDOCS_2_WARNING": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return out


def _text(page: Path) -> str:
    return re.sub(r"<[^>]+>", "", page.read_text(encoding="utf-8"))


def test_the_configuration_reference_names_every_key_with_its_description(site: Path) -> None:
    text = _text(site / "reference" / "configuration" / "index.html")
    for section, field in Params.model_fields.items():
        for key, info in field.annotation.model_fields.items():  # type: ignore[union-attr]
            assert f"{section}.{key}" in text, f"{section}.{key} missing from the reference"
            assert info.description, f"{section}.{key} has no description for the reference"


def test_the_cli_reference_shows_every_command_and_option(site: Path) -> None:
    text = _text(site / "reference" / "cli" / "index.html")
    command = typer.main.get_command(app)
    for name, sub in command.commands.items():  # type: ignore[attr-defined]
        assert f"transferpilot {name}" in text
        for param in sub.params:
            for opt in param.opts:
                if opt.startswith("-"):
                    assert opt in text, f"{name} {opt} missing from the CLI reference"


def test_every_result_table_is_included_not_retyped() -> None:
    """Each ``benchmarks/results/*.md`` is shown in the docs by a snippet include, and no
    page holds a copy of one of their tables."""
    docs = {page: page.read_text(encoding="utf-8") for page in PAGES}
    everything = "\n".join(docs.values())
    for result in sorted(RESULTS.glob("*.md")):
        include = f'--8<-- "benchmarks/results/{result.name}"'
        assert include in everything, f"{result.name} is in no page of docs/"
        headers = {
            line.strip()
            for line in result.read_text(encoding="utf-8").splitlines()
            if line.startswith("| ") and not line.startswith("|--")
        }
        for page, text in docs.items():
            copied = headers & {line.strip() for line in text.splitlines()}
            assert not copied, f"{page.name} retypes rows of {result.name}: {sorted(copied)[:2]}"


def test_the_readme_is_short_and_its_headline_table_is_the_benchmarks() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    lines = (RESULTS / "decision_quality.md").read_text(encoding="utf-8").splitlines()
    end = 2
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    headline = "\n".join(lines[:end])
    assert headline in readme, (
        "README's headline table is not benchmarks/results/decision_quality.md's first "
        "table: copy the title line and the table over from that file"
    )
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).is_file(), f"README links to {link}, which does not exist"
