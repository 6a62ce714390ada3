"""The documentation in docs/ stays true: its examples run, its links resolve.

The ``python`` blocks of ``docs/extending.md`` are run in order in one fresh
interpreter (later blocks use what earlier ones defined); a block fenced as
``python skip`` is only shown, not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = ("method.md", "architecture.md", "extending.md")
FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.S | re.M)


def python_blocks(path: Path) -> list[tuple[bool, str]]:
    """``(skipped, code)`` for every ```python block of a Markdown file."""
    return [("skip" in info.split(), code) for info, code in FENCE.findall(path.read_text(encoding="utf-8"))]


def test_extending_has_runnable_examples():
    blocks = python_blocks(DOCS / "extending.md")
    assert sum(not skipped for skipped, _ in blocks) >= 6
    assert any(skipped for skipped, _ in blocks)  # the skip marker is understood


def test_extending_examples_run(tmp_path):
    code = "\n\n".join(code for skipped, code in python_blocks(DOCS / "extending.md") if not skipped)
    script = tmp_path / "extending.py"
    script.write_text(code, encoding="utf-8")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("page", PAGES)
def test_pages_exist_and_cite_no_development_notes(page):
    text = (DOCS / page).read_text(encoding="utf-8")
    assert len(text) > 2000
    for internal in ("../shared/docs", "METHOD.md", "GPU-NOTES", "ARCHITECTURE.md"):
        assert internal not in text, f"{page} cites {internal}"


@pytest.mark.parametrize("page", ["README.md", *(f"docs/{p}" for p in PAGES)])
def test_relative_links_resolve(page):
    path = ROOT / page
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8"))
    local = [link for link in links if "://" not in link and not link.startswith("mailto:")]
    missing = [link for link in local if not (path.parent / link).exists()]
    assert not missing, f"{page} links to missing files: {missing}"


def test_readme_points_to_the_docs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "../shared/docs" not in readme
    for page in PAGES:
        assert f"docs/{page}" in readme
