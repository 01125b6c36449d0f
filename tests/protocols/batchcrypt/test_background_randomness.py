"""Background Paillier randomness: exact rounds, no obfuscator ever used twice, bad input."""

from __future__ import annotations

import asyncio
import functools
import importlib
import pickle
import threading
import time

import gmpy2
import numpy as np
import pytest

import hefl
from hefl import crypto
from hefl.crypto import ObfuscatorBatch, generate_keypair
from hefl.errors import ConfigError, CryptoError, HeflError
from hefl.protocols.batchcrypt import BatchCryptConfig, aggregate_local, work
from hefl.protocols.batchcrypt.aggregator import AggregatorReport, aggregator
from hefl.protocols.batchcrypt.client import client
from hefl.protocols.batchcrypt.layers import stats_layout

pytestmark = pytest.mark.timeout(90)

SMALL = {"key_bits": 512, "allow_insecure": True}


class Rounds:
    """A RoundSource: fixed vectors for a few rounds, keeping each round's decoded sum."""

    def __init__(self, vectors, layer_sizes=None, grow_at=None):
        self.vectors = vectors
        self.layer_sizes = layer_sizes
        self.grow_at = grow_at
        self.totals = []
        self.timings = []

    def update(self, t):
        if t >= len(self.vectors):
            return None
        if t == self.grow_at:  # a model that changes size after planning
            return np.concatenate([self.vectors[t], self.vectors[t]])
        return self.vectors[t]

    def receive(self, t, total, n_clients):
        self.totals.append(total)
        if t + 1 == self.grow_at:
            self.layer_sizes = (2 * len(self.vectors[t]),)

    def result(self):
        return self.totals

    def record_timings(self, timings):
        self.timings.extend(timings)


def _run(cfg, sources, **options):
    roles = {"aggregator": functools.partial(aggregator, cfg=cfg)}
    for i, source in enumerate(sources):
        roles[f"client{i}"] = functools.partial(client, cfg=cfg, work_=source)
    options.setdefault("executor", "thread")
    return hefl.run(roles, **options)


@pytest.fixture
def watch(monkeypatch):
    """Record the session's private key and every ciphertext the aggregator receives."""
    seen = {"keys": [], "ciphertexts": []}
    make_keys = crypto.generate_keypair

    def keygen(*args, **kwargs):
        pk, sk = make_keys(*args, **kwargs)
        seen["keys"].append(sk)
        return pk, sk

    note = AggregatorReport.note

    def spy(self, message):
        for name in getattr(message, "__dataclass_fields__", {}):
            value = getattr(message, name)
            if isinstance(value, crypto.CipherVector):
                seen["ciphertexts"].extend(value.ciphertexts)
        note(self, message)

    monkeypatch.setattr(crypto, "generate_keypair", keygen)
    monkeypatch.setattr(AggregatorReport, "note", spy)
    return seen


def _obfuscators(sk, ciphertexts):
    """The obfuscator of each ciphertext: c·(1 − m·n) mod n², with m its plaintext."""
    n, nsq = sk.public_key.n, sk.public_key.nsquare
    cv = crypto.CipherVector(sk.public_key, ciphertexts)
    return [
        int(c * (1 - (m % n) * n) % nsq) for c, m in zip(ciphertexts, sk.decrypt(cv), strict=True)
    ]


@pytest.mark.parametrize("policy", ["wait", "online"])
def test_no_obfuscator_is_ever_used_twice(watch, policy):
    k, rounds, n = 3, 3, 300
    cfg = BatchCryptConfig(n_clients=k, chunk_size=2, background_randomness=policy, **SMALL)
    rng = np.random.default_rng(0)
    data = [[rng.normal(0, 0.1, n) for _ in range(rounds)] for _ in range(k)]
    sources = [Rounds(vs, layer_sizes=(200, 100)) for vs in data]
    _run(cfg, sources)
    (sk,) = watch["keys"]
    n_ct = -(-n // crypto.plan_slots(sk.public_key, 16, k).slots_per_plaintext)
    n_stats = stats_layout(sk.public_key, k).n_plaintexts(2)
    assert n_stats == 1  # both layers' statistics in one ciphertext
    # every client: the upload and the layer statistics a round, and the start-up statistics
    assert len(watch["ciphertexts"]) == k * (rounds * (n_ct + n_stats) + n_stats)
    obfuscators = _obfuscators(sk, watch["ciphertexts"])
    assert len(set(obfuscators)) == len(obfuscators)
    for source in sources:
        for t, total in enumerate(source.totals):
            want = np.sum([d[t] for d in data], axis=0)
            assert np.abs(total - want).max() < 2e-3
    timings = [tm for s in sources for tm in s.timings]
    assert sum(tm.obfuscators_background for tm in timings) > 0
    if policy == "wait":  # nothing is made online when the client waits for it
        assert all(tm.obfuscators_online == 0 for tm in timings)
        assert all(tm.background > 0 for tm in timings)


def test_the_obfuscator_check_catches_reuse():
    """The recovery the test above relies on: equal obfuscators come out equal."""
    pk, sk = generate_keypair(512, allow_insecure=True)
    batch = ObfuscatorBatch.draw(sk, 2)
    twice = ObfuscatorBatch(pk, batch._data[: pk.ciphertext_bytes] * 2)
    cv = pk.encrypt([5, -7], pool=twice)
    r1, r2 = _obfuscators(sk, cv.ciphertexts)
    assert r1 == r2 and sk.decrypt(cv) == [5, -7]


def test_a_batch_is_handed_out_once():
    pk, sk = generate_keypair(512, allow_insecure=True)
    batch = ObfuscatorBatch.draw(sk, 3)
    copy = pickle.loads(pickle.dumps(batch))  # what a worker receives
    first = copy.take(2)
    with pytest.raises(CryptoError, match="has 1 left; 2 asked"):
        copy.take(2)
    last = copy.take(1)
    assert len({int(r) for r in first + last}) == 3
    with pytest.raises(CryptoError, match="used up"):
        copy.take(1)
    with pytest.raises(CryptoError, match="used up"):
        pk.encrypt([1], pool=copy)  # never a silent fall-back to fresh values either
    used = ObfuscatorBatch.draw(sk, 2)
    used.take(1)
    with pytest.raises(CryptoError, match="cannot be copied"):
        pickle.dumps(used)
    with pytest.raises(CryptoError, match="batch of 2 cannot encrypt 3"):
        work.encrypt_plain(sk, [1, 2, 3], False, ObfuscatorBatch.draw(sk, 2))
    with pytest.raises(ConfigError, match="whole number"):
        ObfuscatorBatch(pk, b"\x01" * (pk.ciphertext_bytes + 1))


def test_online_work_is_only_the_combination():
    pk, sk = generate_keypair(512, allow_insecure=True)
    layout = crypto.plan_slots(pk, 16, 3)
    q = np.arange(-500, 500, dtype=np.int64)
    batch, secs = work.make_obfuscators(sk, layout.n_plaintexts(len(q)), False)
    assert secs >= 0 and batch.count == layout.n_plaintexts(len(q))
    cv, _ = work.encrypt_packed(sk, layout, q, False, batch)
    assert batch.remaining == 0
    assert np.array_equal(layout.unpack(sk.decrypt(cv), len(q), n_summands=1), q)


def test_update_that_does_not_fit_the_plan_is_refused():
    cfg = BatchCryptConfig(n_clients=2, chunk_size=2, background_randomness="wait", **SMALL)
    rng = np.random.default_rng(1)
    sources = [Rounds([rng.normal(0, 0.1, 200)] * 2, (200,), grow_at=1) for _ in range(2)]
    with pytest.raises(HeflError) as info:
        _run(cfg, sources)
    text = f"{info.value} {getattr(info.value, 'cause', '')}"
    assert "round 1's update of 400 values" in text and "planned for" in text


def test_config_refuses_unknown_policy():
    with pytest.raises(ConfigError, match="background_randomness must be"):
        BatchCryptConfig(background_randomness="later", **SMALL)


def _slow_background(monkeypatch, seconds):
    """Make every background batch take ``seconds`` (the executor is a thread pool)."""
    make = work.make_obfuscators
    lock = threading.Lock()

    def slow(*args):
        with lock:  # one at a time, so the client catches up with them
            time.sleep(seconds)
        return make(*args)

    monkeypatch.setattr(work, "make_obfuscators", slow)


@pytest.mark.parametrize(("policy", "said"), [("wait", "waited"), ("online", "online")])
def test_late_background_work_is_reported(monkeypatch, policy, said):
    _slow_background(monkeypatch, 0.05)
    k, n = 2, 400
    cfg = BatchCryptConfig(n_clients=k, chunk_size=1, background_randomness=policy, **SMALL)
    rng = np.random.default_rng(2)
    data = [[rng.normal(0, 0.1, n) for _ in range(2)] for _ in range(k)]
    sources = [Rounds(vs, (n,)) for vs in data]
    _run(cfg, sources)
    timings = [tm for s in sources for tm in s.timings]
    assert {tm.randomness for tm in timings} & {said}
    if policy == "wait":
        assert sum(tm.randomness_wait for tm in timings) > 0
        assert all(tm.obfuscators_online == 0 for tm in timings)
    else:
        assert sum(tm.obfuscators_online for tm in timings) > 0
    for source in sources:
        for t, total in enumerate(source.totals):
            assert np.abs(total - np.sum([d[t] for d in data], axis=0)).max() < 2e-3


def test_one_shot_round_runs_online_and_is_exact():
    cfg = BatchCryptConfig(n_clients=2, clipping=0.5, background_randomness="wait", **SMALL)
    rng = np.random.default_rng(3)
    xs = [rng.uniform(-0.5, 0.5, 300) for _ in range(2)]
    got = aggregate_local(xs, cfg)
    assert np.abs(got - np.sum(xs, axis=0)).max() < 2 * 0.5 / (2**15 - 1)


def test_recovered_obfuscator_is_the_one_used():
    pk, sk = generate_keypair(512, allow_insecure=True)
    batch = ObfuscatorBatch.draw(sk, 1)
    r = int(pickle.loads(pickle.dumps(batch)).take(1)[0])
    cv = pk.encrypt([123], pool=batch)
    assert _obfuscators(sk, cv.ciphertexts) == [r]
    assert gmpy2.mpz(r) < pk.nsquare


class _CountingParty:
    """Just enough of a Party for ClientSession._upload: counts chunks made but not sent."""

    name, peers = "client0", ("aggregator",)
    capacity = 2  # executor workers: the window is two chunks per worker

    def __init__(self):
        self.made = self.sent = self.most_held = 0
        self.order = []

    def statistics(self):
        return {}

    async def offload(self, fn, *args):
        self.made += 1
        self.most_held = max(self.most_held, self.made - self.sent)
        await asyncio.sleep(0)
        return fn(*args)

    def stream(self, peer, tag):
        party = self

        class Sender:
            async def __aenter__(self):
                return self

            async def __aexit__(self, *exc):
                return False

            async def send(self, wire):
                party.sent += 1
                party.order.append(wire)

        return Sender()


def test_upload_keeps_a_bounded_window():
    """Memory of an upload is bounded by the window (two chunks per executor worker), not the
    model."""
    from hefl.protocols.batchcrypt.federation import RoundTiming

    client_module = importlib.import_module("hefl.protocols.batchcrypt.client")

    pk, _ = generate_keypair(512, allow_insecure=True)
    chunks = [pk.encrypt([i]) for i in range(50)]
    party = _CountingParty()
    session = client_module.ClientSession(party, BatchCryptConfig(n_clients=1, **SMALL))

    async def jobs():
        for cv in chunks:
            yield (lambda cv=cv: (cv, 0.001)), ()

    timing = RoundTiming(round=0)
    asyncio.run(session._upload(0, jobs(), timing))
    assert party.sent == 50 and party.most_held <= 4
    assert timing.encrypt >= 0.05  # every chunk's CPU is charged


def test_statistics_of_many_layers_travel_packed(watch):
    """Per-layer Σx² of 20 layers: a few ciphertexts each way, the exact α on every client."""
    k, layers = 2, (10,) * 20
    cfg = BatchCryptConfig(n_clients=k, key_bits=1024, allow_insecure=True, chunk_size=4)
    rng = np.random.default_rng(4)
    data = [[rng.normal(0, 0.1, 200) * np.repeat(np.arange(1, 21), 10)] for _ in range(k)]
    sources = [Rounds(vs, layers) for vs in data]
    _run(cfg, sources)
    (sk,) = watch["keys"]
    per_ct = stats_layout(sk.public_key, k).slots_per_plaintext
    assert per_ct == 4  # 1024-bit key: four 251-bit lanes
    n_ct = -(-200 // crypto.plan_slots(sk.public_key, 16, k).slots_per_plaintext)
    assert len(watch["ciphertexts"]) == k * (n_ct + 2 * 5)
    want = np.sum([d[0] for d in data], axis=0)
    for source in sources:  # layers 100x apart in scale keep their own precision
        err = np.abs(source.totals[0] - want).reshape(20, 10).max(axis=1)
        assert np.all(err < 1e-3 * np.arange(1, 21))


def test_absurd_statistics_are_refused_clearly():
    from hefl.protocols.batchcrypt.layers import pack_square_sums

    pk, _ = generate_keypair(512, allow_insecure=True)
    layout = stats_layout(pk, 3)
    assert layout.pack([5, 7]) == pack_square_sums(layout, [5, 7])
    with pytest.raises(ConfigError, match="sum of squares needs 301 bits"):
        pack_square_sums(layout, [1 << 300])


@pytest.mark.parametrize(("declared", "plans"), [(True, 2), (False, 3)])
def test_no_randomness_is_made_after_the_last_round(monkeypatch, declared, plans):
    """A source that says how many rounds it runs gets no obfuscators made for a round after
    its last (one plan before each round); one that does not still gets a plan after it."""
    from hefl.protocols.batchcrypt import randomness

    made = []
    plan = randomness.Reserve.plan

    def counting(self, sizes):
        made.append(sum(sum(v) for v in sizes.values()))
        plan(self, sizes)

    monkeypatch.setattr(randomness.Reserve, "plan", counting)
    cfg = BatchCryptConfig(n_clients=1, background_randomness="wait", **SMALL)
    source = Rounds([np.full(50, 0.1), np.full(50, 0.2)], layer_sizes=(50,))
    if declared:
        source.rounds = 2
    _run(cfg, [source])
    assert len(made) == plans and all(k > 0 for k in made)
    assert [float(t[0]) for t in source.totals] == pytest.approx([0.1, 0.2], abs=1e-3)
