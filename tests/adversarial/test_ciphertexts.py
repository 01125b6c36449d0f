"""Hostile ciphertexts in the real protocols: out of range (0, n², not invertible), under
another key, replayed from an earlier round (verbatim, or as the current round's content).

BatchCrypt's aggregator and clients, VF2Boost's active party (histograms) and passive party
(encrypted gradients) each refuse them with the exact hefl error naming the sender."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hefl_faults import TALLY, Fault, batchcrypt_expected, batchcrypt_roles, vf2boost_roles

import hefl
from hefl.errors import KeyMismatchError, PeerFailed, ProtocolError

pytestmark = pytest.mark.timeout(60, method="thread")

OUT_OF_RANGE = {
    "zero": "0 < c < n",
    "n_squared": "0 < c < n",
    "not_invertible": "invertible",
}


def run_failing(roles, **kw):
    t0 = time.monotonic()
    with pytest.raises(PeerFailed) as info:
        hefl.run(roles, executor="inline", timeout=30, **kw)
    TALLY["faults"] += 1
    assert time.monotonic() - t0 < 30
    return info.value


def test_batchcrypt_baseline_is_correct():
    out = hefl.run(batchcrypt_roles(rounds=2), executor="inline")
    for total in out["client0"]:
        assert np.abs(total - batchcrypt_expected()).max() < 0.05


# -- BatchCrypt ------------------------------------------------------------------------------
@pytest.mark.parametrize("tamper", list(OUT_OF_RANGE))
@pytest.mark.parametrize(
    ("culprit", "tag"),
    [("client1", r"bc/0/up"), ("client0", r"bc/0/pre"), ("aggregator", r"bc/0/down")],
    ids=["client-upload", "client-daciq-stats", "aggregator-sum"],
)
def test_batchcrypt_refuses_out_of_range_ciphertexts(tamper, culprit, tag):
    fault = Fault("send", tag, "tamper", arg=tamper)
    exc = run_failing(batchcrypt_roles(faults={culprit: fault}))
    assert exc.peer == culprit
    assert "malformed message" in exc.cause and "invalid ciphertexts" in exc.cause
    assert OUT_OF_RANGE[tamper] in exc.cause


def test_batchcrypt_aggregator_refuses_ciphertexts_under_another_key():
    fault = Fault("send", r"bc/0/up", "tamper", arg="other_key")
    exc = run_failing(batchcrypt_roles(faults={"client1": fault}))
    assert exc.peer == "aggregator" and isinstance(exc.__cause__, KeyMismatchError)
    assert "'client1' sent ciphertexts under key" in exc.cause


def test_batchcrypt_client_refuses_a_sum_under_another_key():
    fault = Fault("send", r"bc/0/down", "tamper", arg="other_key")
    exc = run_failing(batchcrypt_roles(faults={"aggregator": fault}))
    assert isinstance(exc.__cause__, KeyMismatchError)
    assert "'aggregator' sent ciphertexts under key" in exc.cause


def test_batchcrypt_verbatim_replay_of_an_earlier_round_is_detected():
    """Regression: a round-0 message re-sent in round 1 waited unread forever; now the
    aggregator has retired round 0 and names the sender."""
    fault = Fault("send", r"bc/1/hdr", "replay", arg=r"bc/0/hdr")
    exc = run_failing(batchcrypt_roles(rounds=2, faults={"client1": fault}))
    assert exc.peer == "client1" and "'bc/0/hdr'" in exc.cause and "replayed" in exc.cause


def test_batchcrypt_earlier_round_header_under_the_current_tag_is_detected():
    fault = Fault("send", r"bc/1/hdr", "resend", arg=r"bc/0/hdr")
    exc = run_failing(batchcrypt_roles(rounds=2, faults={"client1": fault}))
    assert exc.peer == "aggregator" and isinstance(exc.__cause__, ProtocolError)
    assert "client 'client1' sent a header for round 0 in round 1" in exc.cause


def test_batchcrypt_duplicated_upload_chunk_is_detected():
    fault = Fault("send", r"bc/0/up", "replay", arg=r"bc/0/hdr")
    exc = run_failing(batchcrypt_roles(faults={"client1": fault}))
    assert exc.peer == "client1" and "replayed or duplicated" in exc.cause


# -- VF2Boost --------------------------------------------------------------------------------
def test_vf2boost_baseline_runs():
    out = hefl.run(vf2boost_roles(), executor="inline")
    assert len(out["active"]["tree_seconds"]) == 2


@pytest.mark.parametrize("tamper", list(OUT_OF_RANGE))
@pytest.mark.parametrize(
    ("culprit", "tag"),
    [("passive1", r"vf2/hist/0/0/\d+"), ("active", r"vf2/gh/0")],
    ids=["passive-histograms", "active-gradients"],
)
def test_vf2boost_refuses_out_of_range_ciphertexts(tamper, culprit, tag):
    exc = run_failing(vf2boost_roles(faults={culprit: Fault("send", tag, "tamper", arg=tamper)}))
    assert exc.peer == culprit
    assert "malformed message" in exc.cause and OUT_OF_RANGE[tamper] in exc.cause


def test_vf2boost_active_refuses_histograms_under_another_key():
    fault = Fault("send", r"vf2/hist/0/0/\d+", "tamper", arg="other_key")
    exc = run_failing(vf2boost_roles(faults={"passive1": fault}))
    assert exc.peer == "active" and isinstance(exc.__cause__, ProtocolError)
    assert "party 'passive1' sent histograms that do not decrypt" in exc.cause


def test_vf2boost_passive_refuses_gradients_under_another_key():
    fault = Fault("send", r"vf2/gh/0", "tamper", arg="other_key")
    exc = run_failing(vf2boost_roles(faults={"active": fault}))
    assert exc.peer == "passive1" and isinstance(exc.__cause__, ProtocolError)
    assert "bad encrypted gradients from 'active'" in exc.cause


def test_vf2boost_verbatim_replay_of_an_earlier_tree_is_detected():
    fault = Fault("send", r"vf2/hist/1/0/\d+", "replay", arg=r"vf2/hist/0/0/\d+")
    exc = run_failing(vf2boost_roles(faults={"passive1": fault}))
    assert exc.peer == "passive1" and "'vf2/hist/0/0/0'" in exc.cause and "replayed" in exc.cause


def test_vf2boost_earlier_tree_histograms_under_the_current_tag_are_detected():
    """Tree 0's (validly encrypted, re-randomized) histograms offered as tree 1's: their
    totals are tree 0's gradient sums, which the active party checks against tree 1's."""
    fault = Fault("send", r"vf2/hist/1/0/\d+", "resend", arg=r"vf2/hist/0/0/\d+")
    exc = run_failing(vf2boost_roles(faults={"passive1": fault}))
    assert exc.peer == "active" and isinstance(exc.__cause__, ProtocolError)
    assert "party 'passive1' sent histograms whose totals differ" in exc.cause
