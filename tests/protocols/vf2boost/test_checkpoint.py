"""VF2Boost checkpoints in one process: resumed models equal uninterrupted ones, and a
checkpoint of another training is refused naming what differs."""

from __future__ import annotations

import functools
import json
import stat

import numpy as np
import pytest

import hefl
from hefl.crypto import generate_keypair
from hefl.errors import ConfigError, PeerFailed
from hefl.protocols.vf2boost import VF2BoostConfig, active_party, fit, passive_party
from hefl.protocols.vf2boost import passive as passive_module

NAMES = ["active", "passive1", "passive2"]


@pytest.fixture(scope="module")
def data(adult_small):
    _, three, y = adult_small
    return [X[:300] for X in three], y[:300]


def cfg_of(**changes):
    base = {"n_estimators": 6, "max_depth": 3, "key_bits": 512, "allow_insecure": True}
    return VF2BoostConfig(precompute=False, **{**base, **changes})


def run(data, cfg, **kwargs):
    parts, y = data
    return fit(parts, y, cfg, executor="thread", **kwargs)


def shares(result):
    return [p.to_json() for p in result.model.parties]


@pytest.fixture(scope="module")
def uninterrupted(data):
    return {n: shares(run(data, cfg_of(n_estimators=n))) for n in (4, 6)}


def crash_at(tree):
    def progress(done, total, seconds):
        if done == tree:
            raise RuntimeError("crash")

    return progress


def tree_files(root, name):
    return sorted(p.name for p in (root / name).glob("tree-*.json"))


@pytest.mark.timeout(60)
def test_active_crash_then_resume_gives_the_uninterrupted_model(data, uninterrupted, tmp_path):
    with pytest.raises(PeerFailed, match="crash"):
        run(data, cfg_of(), checkpoint_dir=tmp_path, progress=crash_at(3))
    assert all(len(tree_files(tmp_path, n)) == 3 for n in NAMES)
    resumed = run(data, cfg_of(), checkpoint_dir=tmp_path, resume=True)
    assert shares(resumed) == uninterrupted[6]
    assert len(resumed.tree_seconds) == 3  # trees 4-6 only
    # resuming a finished training grows nothing and returns the same model
    again = run(data, cfg_of(), checkpoint_dir=tmp_path, resume=True)
    assert shares(again) == uninterrupted[6] and again.tree_seconds == []


@pytest.mark.timeout(60)
def test_passive_crash_then_resume(data, uninterrupted, tmp_path, monkeypatch):
    grow = passive_module.PassiveParty.grow_tree

    async def failing(self, t):
        if t == 2 and self.party.name == "passive2":
            raise RuntimeError("passive crash")
        await grow(self, t)

    monkeypatch.setattr(passive_module.PassiveParty, "grow_tree", failing)
    with pytest.raises(PeerFailed, match="passive crash"):
        run(data, cfg_of(), checkpoint_dir=tmp_path)
    monkeypatch.setattr(passive_module.PassiveParty, "grow_tree", grow)
    assert len(tree_files(tmp_path, "passive2")) == 2
    assert shares(run(data, cfg_of(), checkpoint_dir=tmp_path, resume=True)) == uninterrupted[6]


@pytest.mark.timeout(60)
def test_a_party_holding_more_trees_drops_them_and_more_trees_continue(
    data, uninterrupted, tmp_path
):
    run(data, cfg_of(n_estimators=4), checkpoint_dir=tmp_path)
    (tmp_path / "passive1" / "tree-000003.json").unlink()  # it died before saving tree 4
    resumed = run(data, cfg_of(n_estimators=4), checkpoint_dir=tmp_path, resume=True)
    assert shares(resumed) == uninterrupted[4] and len(resumed.tree_seconds) == 1
    # more trees continue the training: the same model as 6 trees in one go
    longer = run(data, cfg_of(n_estimators=6), checkpoint_dir=tmp_path, resume=True)
    assert shares(longer) == uninterrupted[6] and len(longer.tree_seconds) == 2


@pytest.mark.timeout(60)
def test_checkpoint_files_hold_only_their_party_s_data(data, tmp_path):
    run(data, cfg_of(n_estimators=1), checkpoint_dir=tmp_path)
    assert stat.S_IMODE((tmp_path / "active").stat().st_mode) == 0o700
    for name in NAMES:
        for f in (tmp_path / name).iterdir():
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert sorted(p.name for p in (tmp_path / "active").iterdir()) == [
        "header.json",
        "paillier.key.json",
        "tree-000000.json",
    ]
    for name in ("passive1", "passive2"):
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == [
            "header.json",
            "tree-000000.json",
        ]
        header = json.loads((tmp_path / name / "header.json").read_text())
        assert header["key"] == json.loads((tmp_path / "active" / "header.json").read_text())["key"]
        record = json.loads((tmp_path / name / "tree-000000.json").read_text())
        assert record["out"] is None  # margins and leaf weights stay with the active party
        assert all(t["leaf_values"] is None for t in record["trees"])


@pytest.mark.timeout(60)
def test_a_checkpoint_of_another_training_is_refused(data, tmp_path):
    parts, y = data
    run(data, cfg_of(n_estimators=2), checkpoint_dir=tmp_path)
    with pytest.raises(ConfigError, match="pass resume=True"):
        run(data, cfg_of(n_estimators=2), checkpoint_dir=tmp_path)
    with pytest.raises(ConfigError, match="'max_depth': 3 there, 4 now"):
        run(data, cfg_of(n_estimators=2, max_depth=4), checkpoint_dir=tmp_path, resume=True)
    other = [parts[0], parts[1], parts[2] + 1.0]
    with pytest.raises(ConfigError, match=r"passive2.*training data"):
        fit(other, y, cfg_of(n_estimators=2), checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ConfigError, match="parties"):
        run(
            data,
            cfg_of(n_estimators=2),
            names=["active", "passive1", "mallory"],
            checkpoint_dir=tmp_path,
            resume=True,
        )
    key = generate_keypair(512, allow_insecure=True)
    with pytest.raises(ConfigError, match="Paillier key"):
        run(data, cfg_of(n_estimators=2), keypair=key, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ConfigError, match="checkpoint_dir"):
        run(data, cfg_of(n_estimators=2), resume=True)
    (tmp_path / "passive1" / "tree-000001.json").write_text("{torn")  # never by hefl itself
    with pytest.raises(ConfigError, match=r"cannot read checkpoint file .*tree-000001.json"):
        run(data, cfg_of(n_estimators=2), checkpoint_dir=tmp_path, resume=True)


def _roles(data, cfg, dirs):
    parts, y = data
    roles = {"active": functools.partial(active_party, X=parts[0], y=y, cfg=cfg, **dirs[0])}
    for i, name in enumerate(NAMES[1:], start=1):
        roles[name] = functools.partial(passive_party, X=parts[i], cfg=cfg, **dirs[i])
    return roles


@pytest.mark.timeout(60)
def test_the_parties_agree_or_refuse(data, tmp_path):
    cfg = cfg_of(n_estimators=2)
    run(data, cfg, checkpoint_dir=tmp_path)
    saved = {"checkpoint_dir": str(tmp_path), "resume": True}
    # one party started without its checkpoint while the others hold trees
    roles = _roles(data, cfg, [saved, saved, {}])
    with pytest.raises(PeerFailed, match=r"\['passive2'\] keep no checkpoint"):
        hefl.run(roles, executor="thread")
    # a passive party whose trees are not the active party's
    record = tmp_path / "passive1" / "tree-000000.json"
    doc = json.loads(record.read_text())
    doc["trees"][0]["nodes"][0]["split"] += 1
    record.write_text(json.dumps(doc))
    with pytest.raises(PeerFailed, match=r"'passive1'.s checkpoint has another tree 0"):
        hefl.run(_roles(data, cfg, [saved] * 3), executor="thread")


def test_margins_are_rebuilt_exactly():
    from hefl.protocols.vf2boost.checkpoint import _pack_output, _unpack_output

    rng = np.random.default_rng(0)
    leaves = np.array([0.1, -0.0, 0.0, 1e-300, -2.5])
    out = leaves[rng.integers(0, len(leaves), 1000)]
    packed = json.loads(json.dumps(_pack_output(out)))
    back = _unpack_output(packed)
    assert back.view(np.uint64).tolist() == out.view(np.uint64).tolist()
    assert len(packed["index"]) < 2 * len(out)  # a byte per row, base64


@pytest.mark.timeout(60)
def test_a_crash_before_the_first_tree(data, uninterrupted, tmp_path, monkeypatch):
    """Killed at setup (the keys made and handed out, no tree yet): resuming starts from
    tree 0 under the same key."""
    from hefl.protocols.vf2boost.checkpoint import TreeCheckpoint

    real = TreeCheckpoint.agree

    async def crash(self, party, active, passives):
        if party.name == "passive1":
            raise RuntimeError("crash at setup")
        return await real(self, party, active, passives)

    monkeypatch.setattr(TreeCheckpoint, "agree", crash)
    with pytest.raises(PeerFailed, match="crash at setup"):
        run(data, cfg_of(), checkpoint_dir=tmp_path)
    monkeypatch.undo()
    assert all((tmp_path / n / "header.json").exists() for n in NAMES)
    assert shares(run(data, cfg_of(), checkpoint_dir=tmp_path, resume=True)) == uninterrupted[6]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("strategy", ["one_output_per_tree", "multi_output_tree"])
def test_multiclass_resume_mid_round_gives_the_uninterrupted_model(data, tmp_path, strategy):
    """A crash inside a round of K trees: the resumed round takes its gradients from the
    margins at the round's start, as the uninterrupted training did."""
    parts, _ = data
    y = (np.nan_to_num(parts[0][:, 0]) // 15 % 3).astype(int)
    cfg = cfg_of(objective="multi:softprob", num_class=3, n_estimators=3,
                 multi_strategy=strategy, key_bits=1024)  # fmt: skip
    whole = shares(run((parts, y), cfg))
    with pytest.raises(PeerFailed, match="crash"):
        run((parts, y), cfg, checkpoint_dir=tmp_path, progress=crash_at(2))
    resumed = run((parts, y), cfg, checkpoint_dir=tmp_path, resume=True)
    assert shares(resumed) == whole
    assert len(resumed.tree_seconds) == cfg.n_trees - 2
