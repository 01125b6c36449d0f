"""Client-to-client sealed boxes that travel through the Flower server.

Every client makes an X25519 key pair per session and announces the public half through the
server. Two clients derive the same 32-byte AES-GCM key from their X25519 shared secret with
HKDF-SHA256 (the session id and both node ids in ``info``); each box carries a fresh random
96-bit nonce and authenticates the session, the purpose and both node ids as associated data,
so the server can neither read a box nor replay it under another purpose, round or node.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hefl.errors import ProtocolError

NONCE_BYTES = 12
PUBLIC_BYTES = 32


@dataclass(frozen=True)
class BoxKeys:
    """One client's X25519 key pair for a session.

    Attributes:
        secret: the raw 32-byte private key (never leaves the client).
        public: the raw 32-byte public key (announced through the server).
    """

    secret: bytes
    public: bytes

    @classmethod
    def generate(cls) -> BoxKeys:
        """A fresh key pair from the OS CSPRNG."""
        sk = X25519PrivateKey.generate()
        raw = serialization.Encoding.Raw
        secret = sk.private_bytes(
            raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return cls(
            secret=secret, public=sk.public_key().public_bytes(raw, serialization.PublicFormat.Raw)
        )


def _pair_key(keys: BoxKeys, peer_public: bytes, session: str, a: int, b: int) -> AESGCM:
    """The AES-GCM key shared by nodes ``a`` and ``b`` (order-independent)."""
    if len(peer_public) != PUBLIC_BYTES:
        raise ProtocolError(
            f"an X25519 public key has {PUBLIC_BYTES} bytes, got {len(peer_public)}"
        )
    shared = X25519PrivateKey.from_private_bytes(keys.secret).exchange(
        X25519PublicKey.from_public_bytes(peer_public)
    )
    lo, hi = sorted((a, b))
    info = f"hefl.flower box v1|{session}|{lo}|{hi}".encode()
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)
    return AESGCM(key)


def _aad(session: str, purpose: str, sender: int, receiver: int) -> bytes:
    return f"{session}|{purpose}|{sender}->{receiver}".encode()


def seal(
    keys: BoxKeys,
    peer_public: bytes,
    session: str,
    purpose: str,
    sender: int,
    receiver: int,
    data: bytes,
) -> bytes:
    """Encrypt ``data`` from node ``sender`` to node ``receiver``.

    Args:
        keys: the sender's key pair.
        peer_public: the receiver's X25519 public key.
        session: the session id both clients got from the server.
        purpose: what the box is for (e.g. ``"paillier-key"``, ``"share/3"``); bound as AAD.
        sender, receiver: the Flower node ids.
        data: the plaintext.

    Returns:
        nonce || AES-GCM ciphertext and tag.

    Raises:
        ProtocolError: ``peer_public`` is not a 32-byte X25519 key.
    """
    nonce = os.urandom(NONCE_BYTES)
    box = _pair_key(keys, peer_public, session, sender, receiver)
    return nonce + box.encrypt(nonce, data, _aad(session, purpose, sender, receiver))


def open_box(
    keys: BoxKeys,
    peer_public: bytes,
    session: str,
    purpose: str,
    sender: int,
    receiver: int,
    sealed: bytes,
) -> bytes:
    """Decrypt a box :func:`seal` made (the mirror arguments, from the receiver's side).

    Raises:
        ProtocolError: the box is truncated, was tampered with, or was made for another
            session, purpose or pair of nodes (names the sender).
    """
    if not isinstance(sealed, bytes) or len(sealed) < NONCE_BYTES + 16:
        raise ProtocolError(f"the sealed {purpose!r} box from node {sender} is truncated")
    box = _pair_key(keys, peer_public, session, sender, receiver)
    try:
        return box.decrypt(
            sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], _aad(session, purpose, sender, receiver)
        )
    except InvalidTag as exc:
        raise ProtocolError(
            f"the sealed {purpose!r} box from node {sender} does not authenticate: tampered "
            "with, or made for another session or node"
        ) from exc
