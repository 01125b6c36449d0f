"""What hefl.flower does with bad input: a client with another config or key, a strategy
configured for more clients than join, an update with NaN/inf, a client missing a round."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")

from hefl import crypto
from hefl.errors import ConfigError, KeyMismatchError, ProtocolError
from hefl.flower import BatchCryptFedAvg, batchcrypt_mod, run_local
from hefl.flower._state import SESSION
from hefl.protocols.batchcrypt import BatchCryptConfig

from .conftest import Recorder, make_client_app, make_server_app

CFG = BatchCryptConfig(bits=16, n_clients=3, key_bits=512, allow_insecure=True)


def _run(client_mod=None, poison=None, cfg=CFG, nodes=3, **server: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    client = make_client_app(cfg, Recorder(), mod=client_mod, poison=poison)
    run_local(make_server_app(cfg, 1, out, **server), client, nodes)
    return out


def test_a_client_with_another_config_is_refused_by_name():
    odd = batchcrypt_mod(CFG.with_(bits=8))
    good = batchcrypt_mod(CFG)

    def mod(msg, context, call_next):
        part = int(context.node_config["partition-id"])
        return (odd if part == 2 else good)(msg, context, call_next)

    with pytest.raises(ConfigError, match=r"node \d+ .*bits=16 vs 8") as info:
        _run(client_mod=mod)
    assert "n_clients" not in str(info.value)  # only the setting that differs is named


def test_a_client_under_another_key_is_refused_by_name():
    good = batchcrypt_mod(CFG)
    _, other = crypto.generate_keypair(CFG.key_bits, allow_insecure=True)

    def mod(msg, context, call_next):
        # partition 1 swaps its agreed key for another one before round 1
        step = msg.content.config_records.get("hefl.batchcrypt")
        if int(context.node_config["partition-id"]) == 1 and step and step["step"] == "train":
            context.state.config_records[SESSION]["secret_json"] = other.to_json()
        return good(msg, context, call_next)

    with pytest.raises(
        KeyMismatchError, match=r"node (\d+) failed step 'train' of round 1: node \1"
    ):
        _run(client_mod=mod)


def test_a_strategy_for_more_clients_than_join_fails_clearly():
    cfg = CFG.with_(n_clients=5)
    with pytest.raises(ConfigError, match=r"configured for 5 clients .* only 3 joined"):
        _run(cfg=cfg, join_timeout=0.5)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_an_update_with_nan_or_inf_names_the_client_and_layer(bad):
    def poison(part: int, rnd: int, arrays: dict[str, np.ndarray]) -> None:
        if part == 1:
            arrays["b"][3] = bad

    with pytest.raises(
        ConfigError, match=r"node (\d+) failed .*node \1: layer 'b' .* 1 NaN or inf"
    ):
        _run(poison=poison)


def test_a_client_missing_from_a_round_fails_the_round():
    def poison(part: int, rnd: int, arrays: dict[str, np.ndarray]) -> None:
        if part == 0:
            time.sleep(3.0)  # longer than the strategy waits

    with pytest.raises(ProtocolError, match=r"node\(s\) \[\d+\] did not answer step 'train'"):
        _run(poison=poison, timeout=1.5)


def test_a_crashing_client_fails_the_round_by_name():
    def poison(part: int, rnd: int, arrays: dict[str, np.ndarray]) -> None:
        if part == 2:
            raise RuntimeError("disk full")

    with pytest.raises(
        ProtocolError, match=r"(?s)node \d+ failed step 'train' of round 1: .*disk full"
    ):
        _run(poison=poison)


def test_bad_settings_are_refused_up_front():
    with pytest.raises(ConfigError, match="mode 'batchcrypt' only"):
        BatchCryptFedAvg(CFG.with_(mode="plain"))
    with pytest.raises(ConfigError, match="mode 'batchcrypt' only"):
        batchcrypt_mod(CFG.with_(mode="phe"))
    with pytest.raises(ConfigError, match="BatchCryptConfig"):
        BatchCryptFedAvg({"bits": 16})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="num_supernodes"):
        run_local(None, None, 0)  # type: ignore[arg-type]


def test_nodes_beyond_n_clients_sit_out():
    out: dict[str, Any] = {}
    run = run_local(make_server_app(CFG, 1, out), make_client_app(CFG, Recorder()), 4)
    assert len(out["strategy"].nodes) == CFG.n_clients
    assert set(run.log.bytes_by_node()) == set(out["strategy"].nodes)


def test_a_reply_under_another_key_id_is_refused_by_the_server():
    good = batchcrypt_mod(CFG)

    def mod(msg, context, call_next):
        reply = good(msg, context, call_next)
        step = reply.content.config_records.get("hefl.batchcrypt") if reply.has_content() else None
        if int(context.node_config["partition-id"]) == 2 and step and step["step"] == "upload":
            step["key_id"] = "00" * 8
        return reply

    with pytest.raises(
        KeyMismatchError, match=r"node \d+ answered step 'upload' of round 1 under key 0000"
    ):
        _run(client_mod=mod)
