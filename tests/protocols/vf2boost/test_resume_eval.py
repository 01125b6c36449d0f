"""Resuming a training with an eval set and early stopping, and multi-class rounds of K trees:
interrupted-then-resumed runs end exactly as uninterrupted ones (same trees, history, best
iteration), and a checkpoint of another eval set, or of none, is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from hefl.errors import ConfigError, PeerFailed
from hefl.protocols.vf2boost import VF2BoostConfig, fit

NAMES = ["active", "passive1", "passive2"]


@pytest.fixture(scope="module")
def data(adult_small):
    _, three, y = adult_small
    train = [X[:300] for X in three], y[:300]
    evals = [X[300:500] for X in three], y[300:500]
    return train, evals


def cfg_of(**changes):
    base = {"n_estimators": 12, "max_depth": 3, "learning_rate": 1.0, "key_bits": 512,
            "allow_insecure": True, "eval_metric": "logloss", "early_stopping_rounds": 2}  # fmt: skip
    return VF2BoostConfig(precompute=False, **{**base, **changes})


def run(parts, y, cfg, **kwargs):
    return fit(parts, y, cfg, executor="thread", **kwargs)


def outcome(result):
    return [p.to_json() for p in result.model.parties], result.evals, result.best_iteration


def crash_at(tree):
    def progress(done, total, seconds, **metrics):
        if done == tree:
            raise RuntimeError("crash")

    return progress


def tree_files(root, name):
    return sorted(p.name for p in (root / name).glob("tree-*.json"))


@pytest.fixture(scope="module")
def uninterrupted(data):
    (parts, y), eval_set = data
    result = run(parts, y, cfg_of(), eval_set=eval_set)
    # early stopping ends this training before its 12 rounds (else the test proves less)
    assert result.best_iteration is not None
    assert len(result.evals["logloss"]) == result.best_iteration + 3 < 12
    return outcome(result)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("crash", [2, 3])
def test_binary_eval_set_early_stopping_resume_equals_uninterrupted(
    data, uninterrupted, tmp_path, crash
):
    """Crashed after round 2's evaluation (and after round 3's tree, before the next round):
    the resumed run restores the metric history and best round, grows the rest, stops at
    the same round and cuts at the same best iteration."""
    (parts, y), eval_set = data
    with pytest.raises(PeerFailed, match="crash"):
        run(parts, y, cfg_of(), eval_set=eval_set, checkpoint_dir=tmp_path,
            progress=crash_at(crash))  # fmt: skip
    # the active party wrote round `crash` with its evaluation; a passive party writes its
    # record once the verdict is in, which the crash may cut short
    held = min(len(tree_files(tmp_path, n)) for n in NAMES)
    assert len(tree_files(tmp_path, "active")) == crash and held >= crash - 1
    record = json.loads((tmp_path / "active" / tree_files(tmp_path, "active")[-1]).read_text())
    assert len(record["eval"]["history"]) == crash and record["eval"]["stop"] is False
    resumed = run(parts, y, cfg_of(), eval_set=eval_set, checkpoint_dir=tmp_path, resume=True)
    assert outcome(resumed) == uninterrupted
    rounds = len(uninterrupted[1]["logloss"])
    assert len(resumed.tree_seconds) == rounds - held
    # resuming the finished (early-stopped) training grows nothing and returns the same
    again = run(parts, y, cfg_of(), eval_set=eval_set, checkpoint_dir=tmp_path, resume=True)
    assert outcome(again) == uninterrupted and again.tree_seconds == []


KILLED = """
import sys
import numpy as np
from hefl.protocols.vf2boost import VF2BoostConfig, fit
d = np.load(sys.argv[1])
parts, eparts = [d["x0"], d["x1"], d["x2"]], [d["e0"], d["e1"], d["e2"]]
cfg = VF2BoostConfig.from_dict(__import__("json").loads(sys.argv[2]))
fit(parts, d["y"], cfg, executor="thread", eval_set=(eparts, d["ey"]), checkpoint_dir=sys.argv[3])
"""


@pytest.mark.timeout(120)
def test_kill_9_of_the_whole_federation_mid_training_then_resume(data, uninterrupted, tmp_path):
    """SIGKILL of the process running every party (threads) once round 3 is written: the
    records on disk are whole, and the resumed run equals the uninterrupted one."""
    (parts, y), (eparts, ey) = data
    arrays = {f"x{i}": X for i, X in enumerate(parts)} | {f"e{i}": X for i, X in enumerate(eparts)}
    np.savez(tmp_path / "data.npz", y=y, ey=ey, **arrays)
    ckpt = tmp_path / "ckpt"
    cmd = [sys.executable, "-c", KILLED, str(tmp_path / "data.npz"), json.dumps(cfg_of().to_dict())]
    proc = subprocess.Popen([*cmd, str(ckpt)], start_new_session=True, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (ckpt / "active" / "tree-000002.json").exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the training never got to round 3"
            time.sleep(0.005)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    held = min(len(tree_files(ckpt, n)) for n in NAMES)
    assert 2 <= held < len(uninterrupted[1]["logloss"])
    resumed = run(parts, y, cfg_of(), eval_set=(eparts, ey), checkpoint_dir=ckpt, resume=True)
    assert outcome(resumed) == uninterrupted


@pytest.mark.timeout(90)
def test_a_round_grown_but_not_evaluated_is_grown_again(data, uninterrupted, tmp_path):
    """Killed between a round's last tree and its evaluation: that tree is not in any
    party's checkpoint (it is written with the evaluation), so it is grown again."""
    (parts, y), eval_set = data
    with pytest.raises(PeerFailed, match="crash"):
        run(parts, y, cfg_of(), eval_set=eval_set, checkpoint_dir=tmp_path,
            progress=crash_at(3))  # fmt: skip
    for name in NAMES:  # as if killed before round 3's evaluation
        (tmp_path / name / "tree-000002.json").unlink(missing_ok=True)
    resumed = run(parts, y, cfg_of(), eval_set=eval_set, checkpoint_dir=tmp_path, resume=True)
    assert outcome(resumed) == uninterrupted
    assert len(resumed.tree_seconds) == len(uninterrupted[1]["logloss"]) - 2


@pytest.mark.timeout(60)
def test_a_checkpoint_of_another_eval_set_or_of_none_is_refused(data, tmp_path):
    (parts, y), (eparts, ey) = data
    cfg = cfg_of(n_estimators=2, early_stopping_rounds=None)
    run(parts, y, cfg, eval_set=(eparts, ey), checkpoint_dir=tmp_path / "a")
    other = ([X[:150] for X in eparts], ey[:150])
    with pytest.raises((ConfigError, PeerFailed), match="another eval set"):
        run(parts, y, cfg, eval_set=other, checkpoint_dir=tmp_path / "a", resume=True)
    run(parts, y, cfg, checkpoint_dir=tmp_path / "b")  # no eval set
    with pytest.raises((ConfigError, PeerFailed), match="without an eval set"):
        run(parts, y, cfg, eval_set=(eparts, ey), checkpoint_dir=tmp_path / "b", resume=True)


@pytest.mark.timeout(120)
def test_multiclass_one_output_per_tree_resume_keeps_every_whole_round(data, tmp_path):
    """3 classes, one tree per class per round, with an eval set and early stopping: a crash
    after 2 whole rounds and a tree of the third resumes with all 7 trees kept (the limit is
    n_estimators rounds of K trees, not n_estimators trees) and ends as the uninterrupted run."""
    (parts, _), (eparts, _) = data
    y = (np.nan_to_num(parts[0][:, 0]) // 15 % 3).astype(int)
    ey = (np.nan_to_num(eparts[0][:, 0]) // 15 % 3).astype(int)
    cfg = cfg_of(objective="multi:softprob", num_class=3, n_estimators=4, eval_metric="mlogloss",
                 early_stopping_rounds=3, key_bits=1024)  # fmt: skip
    whole = outcome(run(parts, y, cfg, eval_set=(eparts, ey)))
    assert len(whole[1]["mlogloss"]) == 4
    with pytest.raises(PeerFailed, match="crash"):
        run(parts, y, cfg, eval_set=(eparts, ey), checkpoint_dir=tmp_path,
            progress=crash_at(7))  # fmt: skip
    assert all(len(tree_files(tmp_path, n)) == 7 for n in NAMES)
    resumed = run(parts, y, cfg, eval_set=(eparts, ey), checkpoint_dir=tmp_path, resume=True)
    assert outcome(resumed) == whole
    assert len(resumed.tree_seconds) == cfg.n_trees - 7  # 5 of 12 trees grown again: none


@pytest.mark.timeout(60)
def test_a_checkpoint_grown_on_other_bins_is_refused(data, tmp_path):
    """A checkpoint written before hefl cut where XGBoost does (no binning rule in its
    header) holds trees on other bins: continuing it would mix two binnings."""
    (parts, y), _ = data
    cfg = cfg_of(n_estimators=2, eval_metric=None, early_stopping_rounds=None)
    run(parts, y, cfg, checkpoint_dir=tmp_path)
    for name in NAMES:
        path = tmp_path / name / "header.json"
        header = json.loads(path.read_text())
        del header["config"]["binning"]
        path.write_text(json.dumps(header))
    with pytest.raises(ConfigError, match="configuration field 'binning'"):
        run(parts, y, cfg, checkpoint_dir=tmp_path, resume=True)
