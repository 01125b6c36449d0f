"""processes=True: one spawned OS process per party, supervised by the caller."""

from __future__ import annotations

import multiprocessing
import os
import time

import hefl_test_roles as R
import pytest

import hefl

pytestmark = pytest.mark.timeout(60, method="thread")


def test_same_roles_in_processes_with_curve():
    out = hefl.run({"hub": R.hub, "s1": R.spoke, "s22": R.spoke}, processes=True, curve=True)
    assert out["hub"] == 117
    assert len({out["s1"], out["s22"], os.getpid()}) == 3  # really separate processes
    assert out.statistics["hub"]["messages_received"] == 2
    assert {s.party for s in out.trace.spans} >= {"s1", "s22"}
    assert not multiprocessing.active_children()


def test_sigkilled_party_is_reported_to_everyone_quickly():
    t0 = time.monotonic()
    with pytest.raises(hefl.PeerFailed) as info:
        hefl.run({"suicide": R.suicide, "w": R.waiter, "s": R.sleeper}, processes=True)
    assert info.value.peer == "suicide" and "SIGKILL" in info.value.cause
    assert time.monotonic() - t0 < 10
    assert not multiprocessing.active_children()


def test_raising_party_process():
    with pytest.raises(hefl.PeerFailed) as info:
        hefl.run({"raiser": R.raiser, "w": R.waiter}, processes=True)
    assert info.value.peer == "raiser"
    assert isinstance(info.value.__cause__, ValueError)
    assert not multiprocessing.active_children()


def test_unpicklable_role_is_refused_up_front():
    async def local_role(party):
        return 1

    with pytest.raises(hefl.ConfigError, match="module-level"):
        hefl.run({"a": local_role, "b": R.sleeper}, processes=True)


MODES = {
    "inproc": {},
    "zmq": {"transport": "zmq"},
    "processes": {"processes": True},
}


@pytest.mark.parametrize("mode", list(MODES))
def test_same_stream_roles_in_all_three_modes(mode):
    """The same role functions, unchanged, in every mode; the consumer gets the first chunk
    long before the producer sends the last one (time.monotonic is system-wide on Linux, so
    the stamps compare across processes)."""
    out = hefl.run({"producer": R.producer, "consumer": R.consumer}, **MODES[mode])
    assert out["consumer"]["values"] == list(range(20))
    assert out["consumer"]["stamps"][0] < out["producer"][-1] - 0.05
    assert hefl.run({"alice": R.alice, "bob": R.bob}, **MODES[mode]) == {"alice": 2, "bob": None}


DIES_ON_IMPORT = """
import os

if os.environ.get("HEFL_TEST_PARENT_PID") != str(os.getpid()):
    os._exit(3)  # in a party process: die while unpickling the role, before reporting anything


async def role(party):
    return party.name
"""


def test_party_dying_before_it_reports_its_address(tmp_path, monkeypatch):
    (tmp_path / "hefl_dies_on_import.py").write_text(DIES_ON_IMPORT)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("HEFL_TEST_PARENT_PID", str(os.getpid()))
    import hefl_dies_on_import as D

    t0 = time.monotonic()
    with pytest.raises(hefl.PeerFailed) as info:
        hefl.run({"a": D.role, "b": R.sleeper}, processes=True)
    assert info.value.peer == "a" and "exited with code 3" in info.value.cause
    assert time.monotonic() - t0 < 20  # not the setup deadline of connect_timeout + 60 s
    assert not multiprocessing.active_children()
