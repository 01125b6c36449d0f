"""The active party's setup: greeting the passive parties, the keys, the bit plan, worker
warm-ups and the obfuscator pool.

Everything here runs once per training, before the first tree.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from hefl import Party, cpu_count
from hefl.crypto import ObfuscatorPool, PrivateKey, PublicKey, generate_keypair
from hefl.errors import ConfigError
from hefl.messages import gather, send
from hefl.protocols.vf2boost.budget import BitPlan
from hefl.protocols.vf2boost.config import VF2BoostConfig
from hefl.protocols.vf2boost.encgh import layout_of
from hefl.protocols.vf2boost.messages import Hello, Session, Setup
from hefl.protocols.vf2boost.objectives import training_plan

#: obfuscators made per background task of the pool
POOL_CHUNK = 256


@dataclass
class ActiveCrypto:
    """The active party's keys and how it encrypts, fixed for the whole training.

    Attributes:
        pk, sk: the training's Paillier keypair.
        plan: the proven bit layout.
        layout: "packed", "pair" or "phe".
        enc_key: the key encryption uses: the private key (the key holder's CRT fast path),
            or the public key for textbook rⁿ (the serial baseline encrypts like phe).
        pool: precomputed obfuscators (``precompute`` with ``blaster``), or None.
    """

    pk: PublicKey
    sk: PrivateKey
    plan: BitPlan
    layout: str
    enc_key: PublicKey | PrivateKey
    pool: ObfuscatorPool | None = None

    @property
    def per_row(self) -> int:
        """Ciphertexts per row of g‖h: one packed, g and h apart (every class's lanes in
        each with vector leaves), or phe's one per class and value."""
        if self.layout == "phe":
            return 2 * self.plan.classes
        return 1 if self.layout == "packed" else 2

    def session(self, cfg: VF2BoostConfig, n_features: int) -> Session:
        """What a passive party with ``n_features`` features must send under this key."""
        return Session(
            key=self.pk,
            layout=self.layout,
            reorder=cfg.reorder,
            slots=self.plan.slots,
            n_features=n_features,
            classes=self.plan.classes,
            max_bin=cfg.max_bin,
        )


async def greet(
    party: Party, n_rows: int, cfg: VF2BoostConfig, passives: list[str], n_eval: int = 0
) -> dict[str, int]:
    """Receive every passive party's :class:`Hello` and check it against ours (rows, config,
    and eval rows: ``n_eval``, 0 without an eval set).

    Returns:
        Each passive party's feature count.

    Raises:
        ProtocolError: a malformed hello (names the party and the field).
        ConfigError: a party whose row count or config differs from ours (named).
    """
    hellos = await gather(party, Hello, peers=passives)
    for name in passives:
        hello = hellos[name]
        if hello.n_rows != n_rows:
            raise ConfigError(
                f"party {name!r} has {hello.n_rows} rows but the active party has {n_rows}; "
                "the parties' rows must be aligned (same instances, same order)"
            )
        ours = cfg.to_dict()
        if hello.config != ours:
            differ = sorted(k for k in ours if hello.config.get(k) != ours[k])
            raise ConfigError(
                f"party {name!r} was started with a different VF2BoostConfig "
                f"(fields {differ}; frac_bits as resolved for its rows and key)"
            )
        if hello.n_eval_rows != n_eval:
            raise ConfigError(
                f"party {name!r} has {hello.n_eval_rows} eval rows but the active party has "
                f"{n_eval}; the eval set must be split by columns like the training data"
            )
    return {name: hellos[name].n_features for name in passives}


async def start_keys(
    party: Party,
    n_rows: int,
    cfg: VF2BoostConfig,
    passives: list[str],
    keypair: tuple[PublicKey, PrivateKey] | None,
) -> ActiveCrypto:
    """Make (or take) the keypair, prove the bit plan and send every passive party its setup.

    Raises:
        PackingOverflowError: the bit plan does not fit the key.
    """
    if keypair is None:
        with party.span("keygen"):
            pk, sk = generate_keypair(cfg.key_bits, allow_insecure=cfg.allow_insecure)
    else:
        pk, sk = keypair
    plan = training_plan(cfg, n_rows, pk.n_bits)
    for index, name in enumerate(passives, start=1):
        await send(party, name, Setup(public_key=pk, index=index, n_rows=n_rows))
    enc_key: PublicKey | PrivateKey = pk if cfg.obfuscation == "rn" else sk
    return ActiveCrypto(pk, sk, plan, layout_of(cfg.pack_gh, cfg.encoding), enc_key)


def _warm_job(key: PublicKey | PrivateKey, method: str) -> None:
    """Start an executor worker early and build its key-holder tables (~1.6 s at 2048 bits)
    before the first chunk needs them."""
    if isinstance(key, PrivateKey) and method != "rn":
        key.obfuscators(1, method=method)


async def warm_up(party: Party, crypto: ActiveCrypto, cfg: VF2BoostConfig) -> None:
    """Start every executor worker with its tables.

    A process executor spawns its workers on first use: starting them now (offline with
    prefill, otherwise while the passive parties bin their features) rather than at the first
    chunk or decryption spares every party the wait for them.
    """
    await asyncio.gather(
        *(party.offload(_warm_job, crypto.enc_key, cfg.obfuscation) for _ in range(party.capacity))
    )


def start_obfuscators(
    party: Party, crypto: ActiveCrypto, cfg: VF2BoostConfig, n_rows: int, prefill: bool
) -> int:
    """Start the obfuscator pool when ``precompute`` and ``blaster`` ask for one.

    The pool's processes are local: as many as the party's executor runs at once, at most one
    per local core (a party on a Dask cluster still makes its randomness on its own host).
    It holds up to two trees' worth, refilled at the lowest CPU
    priority: it only uses the CPU time training leaves idle (the passive parties' histogram
    phases, the gaps between layers) and carries it over to the next tree. With ``prefill``,
    every tree's worth is made up front at normal priority (an offline phase).

    Returns:
        How many obfuscators ``prefill`` waits for (0 without a pool).
    """
    if not (cfg.precompute and cfg.blaster):
        return 0
    trees = cfg.n_trees if prefill else min(cfg.n_trees, 2)
    need = crypto.per_row * n_rows * trees
    crypto.pool = ObfuscatorPool(
        crypto.pk,
        capacity=need,
        chunk=POOL_CHUNK,
        workers=min(cpu_count(), party.capacity),
        low_priority=not prefill,
        method=cfg.obfuscation,
        private_key=crypto.sk,
    )
    return need


async def prefill_obfuscators(party: Party, pool: ObfuscatorPool, need: int) -> None:
    """Wait, without blocking the event loop, until ``need`` obfuscators are ready.

    Raises:
        CryptoError: a pool worker failed.
    """
    with party.span("prefill-obfuscators"):
        while not pool.wait(need, timeout=0):  # a check, never a blocking wait on the loop
            await asyncio.sleep(0.05)


__all__ = [
    "ActiveCrypto",
    "greet",
    "prefill_obfuscators",
    "start_keys",
    "start_obfuscators",
    "warm_up",
]
