"""Agreement at the handshake: parties that disagree on a shared value fail at once."""

from __future__ import annotations

import multiprocessing
import time

import hefl_test_roles as R
import pytest

import hefl
from hefl._agreement import config_digest, disagreement, hello_values

pytestmark = pytest.mark.timeout(30, method="thread")


@pytest.mark.parametrize("mode", [{}, {"transport": "zmq"}])
def test_disagreeing_parties_fail_fast_naming_field_and_values(mode):
    roles = {"alice": R.waiter, "bob": R.waiter, "carol": R.sleeper}
    agreement = {
        "alice": {"protocol": "vf2boost/1", "roles": "active=alice"},
        "bob": {"protocol": "batchcrypt/1", "roles": "active=alice"},
        "carol": {"protocol": "batchcrypt/1", "roles": "active=alice"},
    }
    start = time.monotonic()
    with pytest.raises(hefl.PeerFailed) as info:
        hefl.run(roles, executor="inline", agreement=agreement, **mode)
    assert time.monotonic() - start < 5
    assert isinstance(info.value.__cause__, hefl.ConfigError)
    message = str(info.value)
    assert "disagrees on 'protocol'" in message
    assert "'vf2boost/1'" in message and "'batchcrypt/1'" in message


def test_agreeing_parties_run_and_processes_carry_the_agreement():
    same = {"protocol": "demo/1", "config": config_digest({"a": 1})}
    assert hefl.run({"alice": R.alice, "bob": R.bob}, agreement=same) == {
        "alice": 2,
        "bob": None,
    }
    with pytest.raises(hefl.PeerFailed, match="disagrees on 'x'"):
        hefl.run(
            {"alice": R.waiter, "bob": R.waiter},
            processes=True,
            agreement={"alice": {"x": "1"}, "bob": {"x": "2"}},
        )
    assert not multiprocessing.active_children()


def test_disagreement_message_and_hefl_version():
    mine = hello_values({"protocol": "vf2boost", "config": "abc"})
    assert mine["hefl"] == hefl.__version__ and next(iter(mine)) == "hefl"
    assert disagreement("alice", mine, "bob", dict(mine)) is None
    theirs = {**mine, "protocol": "batchcrypt", "config": "def"}
    assert disagreement("alice", mine, "bob", theirs) == (
        "bob disagrees on 'protocol': bob has 'batchcrypt', alice has 'vf2boost'"
    )
    assert "disagrees on 'hefl'" in disagreement("alice", mine, "bob", None)
    assert "bob has no value" in disagreement("alice", mine, "bob", {"hefl": hefl.__version__})


@pytest.mark.parametrize(
    "bad",
    [["x"], {"k": 1}, {"hefl": "0.0"}, {"": "v"}, {"a": {"k": 2}}, {"a": {"k": "1"}, "b": "2"}],
)
def test_bad_agreement_is_refused(bad):
    with pytest.raises(hefl.ConfigError):
        hefl.run({"alice": R.alice, "bob": R.bob}, agreement=bad)


def test_config_digest_is_canonical():
    assert config_digest({"a": 1, "b": 2}) == config_digest({"b": 2, "a": 1})
    assert config_digest({"a": 1}) != config_digest({"a": 2})
