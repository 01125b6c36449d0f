"""BatchCrypt FedAvg checkpoints in one process: a training interrupted after a round and
resumed continues from the last round every client completed."""

from __future__ import annotations

import json
import stat

import pytest

from hefl.errors import ConfigError, PeerFailed
from hefl.protocols.batchcrypt import BatchCryptConfig, train

SMALL = {"key_bits": 512, "allow_insecure": True}
SPEC = {"rounds": 5, "lr": 0.5, "max_train_rows": 2000}


def crash_at(round_):
    def progress(t, accuracy):
        if t == round_:
            raise RuntimeError("crash")

    return progress


def rounds_held(root, name):
    return sorted(int(p.stem.split("-")[1]) for p in (root / name).glob("round-*.json"))


@pytest.mark.timeout(60)
def test_plain_fedavg_resumed_equals_uninterrupted(tmp_path):
    """Without quantization noise the training is deterministic: the resumed one must give
    the uninterrupted test accuracy and loss after every round, to the last bit (the
    weights, the minibatch sampler's state and the history all come back)."""
    cfg = BatchCryptConfig(n_clients=3, mode="plain", **SMALL)
    ref = train(cfg, **SPEC)
    with pytest.raises(PeerFailed, match="crash"):
        train(cfg, checkpoint_dir=tmp_path, progress=crash_at(2), **SPEC)
    # client0 died inside round 3 before saving it; the others saved it
    assert rounds_held(tmp_path, "client0") == [1, 2]
    assert rounds_held(tmp_path, "client1") == [2, 3]
    resumed = train(cfg, checkpoint_dir=tmp_path, resume=True, **SPEC)
    assert resumed.accuracy == ref.accuracy and resumed.loss == ref.loss
    assert len(resumed.rounds) == 3  # rounds 3-5 ran again
    assert rounds_held(tmp_path, "client1") == [4, 5]
    assert not (tmp_path / "aggregator").exists()


@pytest.mark.timeout(60)
def test_batchcrypt_resume_and_refusals(tmp_path):
    cfg = BatchCryptConfig(n_clients=2, **SMALL)
    with pytest.raises(PeerFailed, match="crash"):
        train(cfg, checkpoint_dir=tmp_path, progress=crash_at(1), **SPEC)
    for name in ("client0", "client1"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o700
        files = sorted(p.name for p in (tmp_path / name).iterdir())
        assert "header.json" in files and not any("key" in f for f in files)
        assert all(stat.S_IMODE((tmp_path / name / f).stat().st_mode) == 0o600 for f in files)
    with pytest.raises(PeerFailed, match="pass resume=True"):
        train(cfg, checkpoint_dir=tmp_path, **SPEC)
    with pytest.raises(PeerFailed, match=r"'batchcrypt\.bits': 16 there, 8 now"):
        train(cfg.with_(bits=8), checkpoint_dir=tmp_path, resume=True, **SPEC)
    with pytest.raises(PeerFailed, match=r"'spec\.lr': 0\.5 there, 0\.1 now"):
        train(cfg, checkpoint_dir=tmp_path, resume=True, **{**SPEC, "lr": 0.1})
    with pytest.raises(ConfigError, match="checkpoint_dir"):
        train(cfg, resume=True, **SPEC)
    resumed = train(cfg, checkpoint_dir=tmp_path, resume=True, **SPEC)
    assert len(resumed.accuracy) == 5 and len(resumed.rounds) == 4
    assert resumed.final_accuracy > 0.7
    # more rounds continue the training
    longer = train(cfg, checkpoint_dir=tmp_path, resume=True, **{**SPEC, "rounds": 6})
    assert longer.accuracy[:5] == resumed.accuracy and len(longer.rounds) == 1


@pytest.mark.timeout(60)
def test_clients_with_different_models_are_refused(tmp_path):
    cfg = BatchCryptConfig(n_clients=2, mode="plain", **SMALL)
    train(cfg, checkpoint_dir=tmp_path, **{**SPEC, "rounds": 2})
    record = tmp_path / "client1" / "round-000002.json"
    doc = json.loads(record.read_text())
    doc["weights"]["data"] = "A" * len(doc["weights"]["data"])
    record.write_text(json.dumps(doc))
    with pytest.raises(PeerFailed, match="do not hold the same model after round 2"):
        train(cfg, checkpoint_dir=tmp_path, resume=True, **{**SPEC, "rounds": 3})
