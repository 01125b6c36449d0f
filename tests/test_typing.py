"""mypy on the core: ``python -m mypy hefl transports protocols`` must report no errors.

Runs on the repository checkout (config: ``[tool.mypy]`` in pyproject.toml), with a fresh
cache under the test's tmp path so every run is a cold, reproducible one. A cold run takes
about 4-5 s on a loaded 2-core machine with mypy's compiled wheel; the timeout leaves room
for an interpreted (pure-Python) mypy, several times slower, on a slower machine.
"""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("hefl", "transports", "protocols")


@pytest.mark.timeout(180)
def test_mypy_reports_no_errors(tmp_path):
    if not (ROOT / "pyproject.toml").is_file() or not all(
        (ROOT / d / "__init__.py").is_file() for d in CHECKED
    ):
        pytest.skip(f"no hefl source tree at {ROOT} (installed without the checkout?)")
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", *CHECKED, "--cache-dir", str(tmp_path / "mypy-cache")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"mypy {' '.join(CHECKED)} (in {ROOT}) exited {proc.returncode}:\n"
            f"{proc.stdout}{proc.stderr}",
            pytrace=False,
        )
