"""CURVE (CurveZMQ) keys: generation, saving and loading.

Every party of a CURVE federation has one long-term keypair. Its ROUTER is a CURVE server with
that key, its DEALERs are CURVE clients with the same key, and each party enrols the public keys
of its peers: a connection from any other key is refused by the ZAP handler, and the sender of
every accepted message is taken from the authenticated key (the frame's ``User-Id``), never
from the self-declared routing id. Keys are Z85 text (40 characters).

``hefl.transports.curve`` holds them because only a transport uses them; :mod:`hefl`
re-exports the key functions users call (``hefl.generate_curve_keypair`` and friends). zmq is
imported inside the functions so that ``import hefl`` stays light (every process-pool worker
imports it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hefl.errors import ConfigError


@dataclass(frozen=True)
class CurveKeyPair:
    """A CurveZMQ keypair in Z85 text.

    Attributes:
        public: the 40-character Z85 public key (share it with the peers).
        secret: the 40-character Z85 secret key (keep it on this host only).
    """

    public: str
    secret: str

    def __post_init__(self) -> None:
        check_curve_key(self.public, "public key")
        check_curve_key(self.secret, "secret key")

    def __repr__(self) -> str:  # never print the secret
        return f"CurveKeyPair(public={self.public!r}, secret=<hidden>)"


def check_curve_key(key: object, what: str = "CURVE key") -> str:
    """Validate a Z85 CURVE key (40 characters, decodes to 32 bytes).

    Raises:
        ConfigError: if it is not a valid Z85 key.
    """
    import zmq.utils.z85 as z85

    if not isinstance(key, str) or len(key) != 40:
        raise ConfigError(f"a {what} must be 40 Z85 characters, got {key!r:.60}")
    try:
        if len(z85.decode(key)) != 32:
            raise ValueError("wrong length")
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"the {what} is not valid Z85: {exc}") from exc
    return key


def generate_curve_keypair() -> CurveKeyPair:
    """Generate a fresh CURVE keypair (libzmq draws it from the OS CSPRNG).

    Raises:
        ConfigError: if libzmq was built without CURVE support.
    """
    import zmq

    if not zmq.has("curve"):
        raise ConfigError("this libzmq has no CURVE support; install pyzmq's bundled libzmq")
    public, secret = zmq.curve_keypair()
    return CurveKeyPair(public.decode("ascii"), secret.decode("ascii"))


def save_curve_keypair(keys: CurveKeyPair, directory: str | Path, name: str) -> tuple[Path, Path]:
    """Write ``<name>.key`` (public) and ``<name>.key_secret`` (secret, mode 0600).

    Returns:
        the paths of the public and the secret key files.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    public_path = directory / f"{name}.key"
    secret_path = directory / f"{name}.key_secret"
    public_path.write_text(keys.public + "\n")
    fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(keys.secret + "\n")
    return public_path, secret_path


def load_curve_key(path: str | Path, what: str = "CURVE key") -> str:
    """Read one Z85 key from a file written by :func:`save_curve_keypair`.

    Raises:
        ConfigError: the file is missing or does not hold a valid key.
    """
    path = Path(path)
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} file {path}: {exc}") from exc
    return check_curve_key(text, f"{what} in {path}")


def load_curve_keypair(directory: str | Path, name: str) -> CurveKeyPair:
    """Load the keypair ``<name>.key`` / ``<name>.key_secret`` from ``directory``."""
    directory = Path(directory)
    return CurveKeyPair(
        load_curve_key(directory / f"{name}.key", "public key"),
        load_curve_key(directory / f"{name}.key_secret", "secret key"),
    )


def curve_public(secret: str) -> str:
    """The Z85 public key that belongs to the Z85 secret key ``secret``.

    Raises:
        ConfigError: ``secret`` is not a valid Z85 key.
    """
    import zmq

    check_curve_key(secret, "secret key")
    return zmq.curve_public(secret.encode("ascii")).decode("ascii")


__all__ = [
    "CurveKeyPair",
    "check_curve_key",
    "curve_public",
    "generate_curve_keypair",
    "load_curve_key",
    "load_curve_keypair",
    "save_curve_keypair",
]
