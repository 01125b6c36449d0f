"""The documentation builds with Sphinx, warnings treated as errors.

A broken cross-reference, a missing page in a toctree, a docstring that autodoc or napoleon
cannot parse or an image that does not exist fails this test, so the docs cannot rot silently.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"

pytest.importorskip("sphinx", reason="the docs extra is not installed: pip install -e '.[docs]'")
pytest.importorskip("myst_parser")
pytest.importorskip("furo")


@pytest.mark.timeout(300)
def test_docs_build_without_warnings(tmp_path):
    out = tmp_path / "html"
    sphinx = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    proc = subprocess.run(
        [*sphinx, "-d", str(tmp_path / "doctrees"), str(DOCS), str(out)],
        capture_output=True,
        text=True,
        timeout=290,
    )
    assert proc.returncode == 0, f"sphinx-build failed:\n{proc.stderr[-6000:]}"
    assert (out / "index.html").is_file()
    pages = ("tutorials/crypto", "how-to/index", "explanation/index", "reference/crypto")
    for page in (*pages, "benchmarks/index"):
        assert (out / f"{page}.html").is_file(), f"{page} was not built"
