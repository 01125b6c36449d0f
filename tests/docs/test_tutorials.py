"""Every Python code block in docs/tutorials runs here, so the tutorials cannot rot.

The blocks of one page run in order in one namespace, as a reader would type them into one
session, with the current directory (a fresh temporary folder) on ``sys.path``. A block whose
info string says ``python notest`` is shown but not run (used only for commands that need
several hosts).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[2] / "docs" / "tutorials"
FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def code_blocks(page: Path) -> list[tuple[int, str]]:
    """(line number, source) of each runnable python block of a Markdown page."""
    text = page.read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        if "notest" in match.group(1).split():
            continue
        line = text.count("\n", 0, match.start()) + 2
        blocks.append((line, match.group(2)))
    return blocks


PAGES = sorted(TUTORIALS.glob("*.md"))


def test_tutorials_exist():
    assert PAGES, f"no tutorials found under {TUTORIALS}"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_tutorial_runs(page: Path, monkeypatch, tmp_path):
    blocks = code_blocks(page)
    assert blocks, f"{page.name} has no python code block"
    monkeypatch.chdir(tmp_path)  # tutorials may write files; keep them out of the repository
    # as in an interactive session, modules the page writes into its folder are importable
    # (also by the party processes it spawns, which inherit sys.path)
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace: dict[str, object] = {"__name__": f"tutorial_{page.stem}"}
    for line, source in blocks:
        code = compile("\n" * (line - 1) + source, str(page), "exec")
        exec(code, namespace)
