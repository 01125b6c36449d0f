"""Make the fault-injection helpers importable by name, also in spawned party processes
(children inherit ``sys.path``; pytest's importlib mode gives test modules names a child
process cannot import)."""

import sys
from pathlib import Path

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import pytest  # noqa: E402
from hefl_faults import TALLY  # noqa: E402


@pytest.fixture(autouse=True)
def _record_tally(record_property):
    before = dict(TALLY)
    yield
    for key, value in TALLY.items():
        record_property(key, value - before[key])
