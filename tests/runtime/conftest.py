"""Make the shared test roles importable by name, also in spawned party/pool processes
(spawned children inherit ``sys.path``), since pytest's importlib mode gives test modules
names a child process cannot import."""

import sys
from pathlib import Path

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
