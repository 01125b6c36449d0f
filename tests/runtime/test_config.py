"""Multi-host federations from TOML: run_party, CURVE key files, heartbeats, bad files."""

from __future__ import annotations

import threading
import time

import hefl_test_roles as R
import pytest

import hefl

pytestmark = pytest.mark.timeout(60, method="thread")


def _run_all(config, roles, **kwargs):
    """Run every party of the TOML federation in its own thread (own event loop)."""
    results, errors = {}, {}

    def target(name):
        try:
            results[name] = hefl.run_party(config, name, roles[name], executor="thread", **kwargs)
        except BaseException as exc:
            errors[name] = exc

    threads = [threading.Thread(target=target, args=(n,)) for n in roles]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    return results, errors


def test_two_hosts_with_curve_key_files(tmp_path, free_ports):
    pa, pb = free_ports(2)
    for name in ("alice", "bob"):
        hefl.save_curve_keypair(hefl.generate_curve_keypair(), tmp_path / "keys", name)
    pub = {n: (tmp_path / "keys" / f"{n}.key").read_text().strip() for n in ("alice", "bob")}
    toml = tmp_path / "fed.toml"
    toml.write_text(
        f"""
[federation]
curve = true
heartbeat_interval = 0.5
peer_timeout = 5

[parties.alice]
address = "tcp://127.0.0.1:{pa}"
public_key = "{pub["alice"]}"
secret_key_file = "keys/alice.key_secret"

[parties.bob]
address = "tcp://127.0.0.1:{pb}"
bind = "tcp://127.0.0.1:{pb}"
public_key = "{pub["bob"]}"
secret_key_file = "keys/bob.key_secret"
"""
    )
    assert (tmp_path / "keys" / "alice.key_secret").stat().st_mode & 0o077 == 0
    results, errors = _run_all(toml, {"alice": R.alice, "bob": R.bob})
    assert not errors, errors
    assert results["alice"] == {"alice": 2} and results["bob"] == {"bob": None}
    assert results["alice"].statistics["alice"]["messages_sent"] == 1


async def _frozen(party):
    """Blocks its own event loop (no heartbeats) for longer than peer_timeout."""
    time.sleep(2.5)
    await party.recv(party.peers[0], "never")


async def _patient(party):
    await party.recv(party.peers[0], "never")


def test_silent_peer_is_detected_by_heartbeats(free_ports):
    pa, pb = free_ports(2)
    config = {
        "federation": {"heartbeat_interval": 0.2, "peer_timeout": 1.0},
        "parties": {
            "frozen": {"address": f"tcp://127.0.0.1:{pa}"},
            "patient": {"address": f"tcp://127.0.0.1:{pb}"},
        },
    }
    t0 = time.monotonic()
    _, errors = _run_all(config, {"frozen": _frozen, "patient": _patient})
    exc = errors["patient"]
    assert isinstance(exc, hefl.PeerFailed) and exc.peer == "frozen" and "silent" in exc.cause
    assert time.monotonic() - t0 < 10


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[parties.a]\naddress = 'tcp://127.0.0.1:1'\n", "at least two"),
        ("[parties.a]\naddress='x'\n[parties.b]\naddress='tcp://h:1'\n", "address"),
        ("[federation]\nwat = 1\n[parties.a]\n", "unknown"),
        (
            "[federation]\ncurve = true\n[parties.a]\naddress='tcp://h:1'\n"
            "[parties.b]\naddress='tcp://h:2'\n",
            "public_key",
        ),
        (
            "[parties.a]\naddress='tcp://h:1'\npublic_key='short'\n[parties.b]\naddress='tcp://h:2'\n",
            "40 Z85",
        ),
        (
            "[federation]\npeer_timeout = 0.1\nheartbeat_interval = 1\n[parties.a]\n"
            "address='tcp://h:1'\n[parties.b]\naddress='tcp://h:2'\n",
            "peer_timeout",
        ),
        ("this is = = not toml\n", "malformed"),
    ],
)
def test_bad_federation_files(text, match):
    with pytest.raises(hefl.ConfigError, match=match):
        hefl.load_federation(text if "\n" in text else text + "\n")


def test_wrong_secret_key_and_unknown_party(tmp_path):
    keys = hefl.generate_curve_keypair()
    other = hefl.generate_curve_keypair()
    text = (
        "[federation]\ncurve = true\n"
        f"[parties.a]\naddress = 'tcp://127.0.0.1:1'\npublic_key = '{keys.public}'\n"
        f"[parties.b]\naddress = 'tcp://127.0.0.1:2'\npublic_key = '{other.public}'\n"
    )
    with pytest.raises(hefl.ConfigError, match="does not match"):
        hefl.run_party(text, "a", R.alice, secret_key=other.secret)
    with pytest.raises(hefl.ConfigError, match="not in the federation"):
        hefl.run_party(text, "zed", R.alice)
    with pytest.raises(hefl.ConfigError, match="secret key"):
        hefl.run_party(text, "a", R.alice)
