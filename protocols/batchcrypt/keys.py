"""Key agreement: the first client makes the Paillier keypair and hands it out.

The private key goes to the other clients over their direct channels (:class:`KeyHandout`),
and only over channels nobody on the network can read (CURVE-encrypted, in-process or on this
host: :meth:`hefl.Party.link_confidential`); the aggregator receives only the public key
(:class:`PublicKeyNotice`), so it can add ciphertexts but never decrypt one.
"""

from __future__ import annotations

import functools

from hefl import Party, crypto
from hefl.crypto import PrivateKey, PublicKey
from hefl.errors import ConfigError
from hefl.protocols.batchcrypt.config import BatchCryptConfig
from hefl.protocols.batchcrypt.messages import Expect, KeyHandout, PublicKeyNotice


async def agree_key(
    party: Party, cfg: BatchCryptConfig, clients: tuple[str, ...]
) -> tuple[PublicKey, PrivateKey]:
    """A client's side of key agreement: make and hand out the keys, or receive them.

    Args:
        party: this client's Party.
        cfg: the federation's configuration (key size, insecure-key opt-in).
        clients: the federation's clients in agreed order; ``clients[0]`` makes the keys.

    Returns:
        The session's (public key, private key).

    Raises:
        ConfigError: (at the key holder) the link to another client is not confidential, so
            the private key is not sent.
        ProtocolError: the key holder sent something other than a private key of
            ``cfg.key_bits`` bits.
    """
    if party.name == clients[0]:
        exposed = [peer for peer in clients[1:] if not party.link_confidential(peer)]
        if exposed:
            raise ConfigError(
                f"{party.name!r} will not send the BatchCrypt private key to {exposed[0]!r}: "
                "their link is neither CURVE-encrypted nor on this host; enable CURVE "
                "(curve = true in the federation file, keys from 'hefl keygen curve')"
            )
        return await _make_and_hand_out(party, cfg, clients[1:])
    obj = await party.recv(clients[0], KeyHandout.tag())
    secret = KeyHandout.from_wire(clients[0], obj, Expect(key_bits=cfg.key_bits)).secret
    return secret.public_key, secret


async def _make_and_hand_out(
    party: Party, cfg: BatchCryptConfig, others: tuple[str, ...]
) -> tuple[PublicKey, PrivateKey]:
    # crypto.generate_keypair is looked up at call time (tests watch it)
    with party.span("keygen", bits=cfg.key_bits):
        pk, sk = await party.offload(
            functools.partial(crypto.generate_keypair, allow_insecure=cfg.allow_insecure),
            cfg.key_bits,
        )
    handout = KeyHandout(secret=sk).to_wire()
    for peer in others:
        await party.send(peer, KeyHandout.tag(), handout)
    await party.send(cfg.aggregator, PublicKeyNotice.tag(), PublicKeyNotice(key=pk).to_wire())
    return pk, sk


async def receive_public_key(
    party: Party, cfg: BatchCryptConfig, keyholder: str
) -> PublicKeyNotice:
    """The aggregator's side: receive the session's public key (and nothing secret).

    Args:
        party: the aggregator's Party.
        cfg: the federation's configuration (the key size to expect).
        keyholder: the client that made the keys.

    Returns:
        The checked :class:`PublicKeyNotice` (its ``key``).

    Raises:
        ProtocolError: ``keyholder`` sent something other than a ``cfg.key_bits``-bit public key.
    """
    obj = await party.recv(keyholder, PublicKeyNotice.tag())
    return PublicKeyNotice.from_wire(keyholder, obj, Expect(key_bits=cfg.key_bits))
