"""A script that starts hefl's processes from its unguarded top level gets one clear
ConfigError before any process starts, never multiprocessing's bootstrapping tracebacks."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from hefl.crypto._orphans import _guarded_in, check_main_guarded

pytestmark = pytest.mark.timeout(90)

PRELUDE = """
import numpy as np
import hefl
from hefl.protocols.vf2boost import VF2BoostConfig, fit, fit_local
from hefl.protocols.batchcrypt import BatchCryptConfig, aggregate_local

rng = np.random.default_rng(0)
X = rng.normal(size=(200, 4))
y = (X[:, 0] > 0).astype(float)
cfg = VF2BoostConfig(n_estimators=1, max_depth=2, key_bits=512, allow_insecure=True)
bc = BatchCryptConfig(n_clients=2, key_bits=512, allow_insecure=True)
"""

CALLS = {
    "fit_local": "fit_local([X[:, :2], X[:, 2:]], y, cfg)",
    "fit-processes": "fit([X[:, :2], X[:, 2:]], y, cfg, processes=True)",
    "aggregate_local": "aggregate_local([np.ones(4), np.ones(4)], bc)",
}


def _run(tmp_path, text: str) -> subprocess.CompletedProcess:
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(text))
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=80, cwd=tmp_path
    )


@pytest.mark.parametrize("call", sorted(CALLS))
def test_unguarded_script_gets_one_config_error(tmp_path, call):
    proc = _run(tmp_path, PRELUDE + f"\nprint('result', {CALLS[call]})\n")
    assert proc.returncode == 1
    err = proc.stderr
    assert err.count("hefl.errors.ConfigError:") == 1, err
    assert 'if __name__ == "__main__":' in err and "train.py" in err and "line " in err
    for noise in ("bootstrapping", "BrokenProcessPool", "leaked", "RuntimeError"):
        assert noise not in err, err
    assert "result" not in proc.stdout


def test_unguarded_import_of_a_module_that_trains_is_caught(tmp_path):
    (tmp_path / "helper.py").write_text(
        PRELUDE + "\nmodel = fit_local([X[:, :2], X[:, 2:]], y, cfg)\n"
    )
    proc = _run(tmp_path, "import helper\n")
    assert proc.returncode == 1 and proc.stderr.count("hefl.errors.ConfigError:") == 1, proc.stderr
    assert "(line 1)" in proc.stderr


def test_guarded_script_trains(tmp_path):
    body = PRELUDE + textwrap.dedent(
        """
        def main():
            model = fit([X[:, :2], X[:, 2:]], y, cfg, processes=True).model
            print("trees", len(model.resolved_trees()))

        if __name__ == "__main__":
            main()
        """
    )
    proc = _run(tmp_path, body)
    assert proc.returncode == 0, proc.stderr
    assert "trees 1" in proc.stdout


@pytest.mark.parametrize(
    ("source", "line", "guarded"),
    [
        ("if __name__ == '__main__':\n    run()\n", 2, True),
        ("if '__main__' == __name__:\n    run()\n", 2, True),
        ("if __name__ == '__main__' and ok:\n    run()\n", 2, True),
        ("run()\n", 1, False),
        ("if __name__ == '__main__':\n    pass\nelse:\n    run()\n", 4, False),
        ("try:\n    if __name__ == '__main__':\n        run()\nfinally:\n    pass\n", 3, True),
        ("with x:\n    run()\n", 2, False),
        ("if __name__ != '__main__':\n    run()\n", 2, False),
    ],
)
def test_what_counts_as_guarded(source, line, guarded):
    import ast

    assert _guarded_in(ast.parse(source).body, line) is guarded


def test_calls_from_code_that_is_not_the_main_script_pass():
    check_main_guarded()  # pytest's main is guarded; this test module is not __main__


def test_notebook_cells_are_not_scripts(tmp_path):
    # a kernel runs each cell in __main__'s namespace, from a file of its own; workers never
    # re-run cells, so an unguarded cell that trains must not be refused
    cell = tmp_path / "cell_1.py"
    cell.write_text(PRELUDE + "\nprint('result', " + CALLS["fit_local"] + " is not None)\n")
    runner = f"import __main__; exec(compile(open({str(cell)!r}).read(), {str(cell)!r}, 'exec'), __main__.__dict__)"
    proc = subprocess.run(
        [sys.executable, "-c", runner], capture_output=True, text=True, timeout=80, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "result True" in proc.stdout
