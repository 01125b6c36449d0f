"""Secure by default across hosts: plain TCP off this host needs an explicit opt-in, roles
are stated in the federation file, and a private key never crosses a readable link."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import hefl
from hefl.errors import ConfigError, PeerFailed
from hefl.transports import InprocNetwork
from hefl.transports.addresses import is_local_address

pytestmark = pytest.mark.timeout(60, method="thread")


def _toml(a: str, b: str, extra: str = "") -> str:
    return (
        f'[federation]\n{extra}\n[parties.alice]\naddress = "{a}"\n[parties.bob]\naddress = "{b}"\n'
    )


@pytest.mark.parametrize(
    ("address", "local"),
    [
        ("tcp://127.0.0.1:7001", True),
        ("tcp://127.3.2.1:7001", True),
        ("tcp://localhost:7001", True),
        ("tcp://[::1]:7001", True),
        ("ipc:///tmp/hefl.sock", True),
        ("inproc://x", True),
        ("tcp://10.0.0.1:7001", False),
        ("tcp://0.0.0.0:7001", False),
        ("tcp://*:7001", False),
        ("tcp://bank.example.org:7001", False),
        ("tcp://[2001:db8::1]:7001", False),
    ],
)
def test_which_addresses_stay_on_this_host(address, local):
    assert is_local_address(address) is local


def test_plain_tcp_off_this_host_is_refused_unless_the_file_opts_in(caplog):
    exposed = _toml("tcp://127.0.0.1:7001", "tcp://10.0.0.2:7001")
    with pytest.raises(ConfigError, match=r"tcp://10\.0\.0\.2:7001.*curve = true.*insecure_"):
        hefl.load_federation(exposed)
    # a wildcard bind listens on every interface: just as exposed
    bind_all = exposed.replace(
        '"tcp://10.0.0.2:7001"', '"tcp://127.0.0.1:7002"\nbind = "tcp://*:7002"'
    )
    with pytest.raises(ConfigError, match=r"tcp://\*:7002"):
        hefl.load_federation(bind_all)
    config = hefl.load_federation(_toml("tcp://127.0.0.1:7001", "tcp://10.0.0.2:7001",
                                        "insecure_transport = true"))  # fmt: skip
    assert config.insecure_transport and config.exposed_address == "tcp://10.0.0.2:7001"
    assert hefl.load_federation(_toml("tcp://127.0.0.1:1", "ipc:///tmp/b")).exposed_address is None
    with pytest.raises(ConfigError, match="insecure_transport must be true or false"):
        hefl.load_federation(_toml("tcp://127.0.0.1:1", "tcp://127.0.0.1:2",
                                   'insecure_transport = "yes"'))  # fmt: skip


def test_an_insecure_party_warns_when_it_starts(caplog, free_ports):
    pa, pb = free_ports(2)
    # a loopback federation whose bind is the wildcard: exposed, opted in
    text = (
        "[federation]\ninsecure_transport = true\nconnect_timeout = 1.0\n"
        f'[parties.alice]\naddress = "tcp://127.0.0.1:{pa}"\nbind = "tcp://0.0.0.0:{pa}"\n'
        f'[parties.bob]\naddress = "tcp://127.0.0.1:{pb}"\n'
    )
    with caplog.at_level(logging.WARNING, logger="hefl"), pytest.raises(PeerFailed):
        hefl.run_party(text, "alice", _noop, executor="inline")
    assert any("without CURVE" in r.getMessage() and "'alice'" in r.getMessage()
               for r in caplog.records)  # fmt: skip


async def _noop(party):
    return None


def test_roles_are_stated_in_the_file():
    config = hefl.load_federation(
        _toml("tcp://127.0.0.1:1", "tcp://127.0.0.1:2", 'protocol = "vf2boost"\nactive = "bob"')
    )
    assert config.protocol == "vf2boost" and config.role("active") == "bob"
    with pytest.raises(ConfigError, match=r'add aggregator = "<one of \[.alice., .bob.\]>"'):
        config.role("aggregator")
    with pytest.raises(ConfigError, match=r"active = 'carol' is not a party"):
        hefl.load_federation(_toml("tcp://127.0.0.1:1", "tcp://127.0.0.1:2", 'active = "carol"'))


class _Opaque:
    """A transport that cannot say whether its links are confidential."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name

    async def start(self):
        await self.inner.start()

    async def send(self, peer, frames):
        await self.inner.send(peer, frames)

    async def recv(self):
        return await self.inner.recv()

    async def close(self, linger=None):
        await self.inner.close(linger)


def test_link_confidentiality_as_parties_see_it():
    seen = {}

    async def role(party):
        seen[party.name] = {p: party.link_confidential(p) for p in party.peers}
        with pytest.raises(ConfigError, match="not a peer"):
            party.link_confidential("mallory")

    hefl.run({"a": role, "b": role}, executor="inline")
    assert seen == {"a": {"b": True}, "b": {"a": True}}  # in-process
    hefl.run({"a": role, "b": role}, transport="zmq", executor="inline")
    assert seen == {"a": {"b": True}, "b": {"a": True}}  # loopback
    net = InprocNetwork(["a", "b"])
    hefl.run({"a": role, "b": role}, transport={n: _Opaque(net.transport(n)) for n in "ab"},
             executor="inline")  # fmt: skip
    assert seen == {"a": {"b": False}, "b": {"a": False}}


def test_batchcrypt_never_sends_the_private_key_over_a_readable_link():
    from hefl.protocols.batchcrypt import BatchCryptConfig, aggregate_local

    cfg = BatchCryptConfig(n_clients=2, key_bits=512, allow_insecure=True)
    vectors = [np.full(4, 0.1), np.full(4, 0.2)]
    names = ["aggregator", "client0", "client1"]
    net = InprocNetwork(names)
    transports = {n: _Opaque(net.transport(n)) for n in names}
    with pytest.raises(PeerFailed) as info:
        aggregate_local(vectors, cfg, transport=transports, executor="inline")
    assert info.value.peer == "client0"
    assert "will not send the BatchCrypt private key to 'client1'" in str(info.value)
    # the same round over links that are confidential goes through
    total = aggregate_local(vectors, cfg, executor="inline")
    assert np.allclose(total, 0.3, atol=0.01)


def test_a_federation_built_in_code_is_held_to_the_same_rule():
    from hefl import FederationConfig, PartySpec

    parties = {
        "alice": PartySpec("alice", "tcp://10.0.0.1:7001", "tcp://10.0.0.1:7001"),
        "bob": PartySpec("bob", "tcp://127.0.0.1:7002", "tcp://127.0.0.1:7002"),
    }
    with pytest.raises(ConfigError, match="off this host, without CURVE"):
        hefl.run_party(FederationConfig(parties), "bob", _noop, executor="inline")
