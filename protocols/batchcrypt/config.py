"""The validated configuration of a BatchCrypt federation."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

from hefl.errors import ConfigError

Mode = Literal["batchcrypt", "phe", "plain"]
Layout = Literal["offset", "signed"]

MODES: tuple[str, ...] = ("batchcrypt", "phe", "plain")
LAYOUTS: tuple[str, ...] = ("offset", "signed")
MAX_CLIENTS = 1000
AGGREGATOR = "aggregator"


def client_name(index: int) -> str:
    """The party name of client ``index`` (``client0``, ``client1``, ...)."""
    return f"client{index}"


@dataclass(frozen=True)
class BatchCryptConfig:
    """Everything the parties of one BatchCrypt federation must agree on.

    Every field is checked when the object is built, so a bad value is refused before any key
    is generated or any party starts.

    Attributes:
        bits: quantization bits r each client keeps per value (2..32). The k-way sum gets its
            room from guard bits in each lane, never by shrinking the range.
        n_clients: the number of clients the lanes are planned for (1..1000). Fewer clients may
            take part in a round; more are refused.
        key_bits: Paillier modulus size; 2048 by default. Smaller keys need ``allow_insecure``.
        allow_insecure: explicit opt-in for keys below 2048 bits (tests, demos).
        clipping: ``"daciq"`` (α = c(r)·σ per layer, σ from encrypted aggregates) or a fixed
            positive float α used for every layer.
        layout: lane layout of the shared slot packer, ``"offset"`` or ``"signed"``.
        chunk_size: ciphertexts per streamed chunk; small chunks let the aggregator start
            summing early, large chunks cut per-message overhead.
        short_exponent: opt in to short-exponent (DJN) obfuscators, which are several times
            faster but rest on the extra short-exponent assumption.
        shared_decryption: each client decrypts 1/k of the aggregate and sends its decoded
            share straight to the other clients (needs client-to-client channels).
        mode: ``"batchcrypt"`` (packed Paillier), ``"phe"`` (the per-value Paillier baseline,
            one phe ciphertext per value, as FATE does) or ``"plain"`` (no encryption).
        phe_frac_bits: fixed-point fraction bits for the per-value ``"phe"`` baseline.
        background_randomness: ``"off"`` (default: obfuscators are made when a round
            encrypts), ``"wait"`` or ``"online"``: each client makes its next round's
            obfuscators in its executor while it trains, so a round's online encryption is
            quantize, pack and one product per ciphertext; when that work falls behind the
            client waits for it (``"wait"``) or makes the late ones online (``"online"``).
        aggregator: the aggregator's party name (default ``"aggregator"``); clients may have
            any other names.
        round_timeout: seconds a party waits for any one message before giving up (passed
            as ``recv_timeout`` to :func:`hefl.run` by :func:`train` and
            :func:`aggregate_local`; pass it yourself when running the roles directly).
    """

    bits: int = 16
    n_clients: int = 3
    key_bits: int = 2048
    allow_insecure: bool = False
    clipping: str | float = "daciq"
    layout: Layout = "offset"
    chunk_size: int = 128
    short_exponent: bool = False
    shared_decryption: bool = True
    mode: Mode = "batchcrypt"
    phe_frac_bits: int = 32
    round_timeout: float = field(default=600.0)
    aggregator: str = AGGREGATOR
    background_randomness: str = "off"

    def __post_init__(self) -> None:
        if not isinstance(self.aggregator, str) or not self.aggregator:
            raise ConfigError(f"aggregator must be a party name, not {self.aggregator!r}")
        _check_int("bits", self.bits, 2, 32)
        _check_int("n_clients", self.n_clients, 1, MAX_CLIENTS)
        _check_int("key_bits", self.key_bits, 128, 16384)
        if self.key_bits < 2048 and not self.allow_insecure:
            raise ConfigError(
                f"key_bits={self.key_bits} is below the 2048-bit default security level; "
                "pass allow_insecure=True to use small keys (tests and demos only)"
            )
        if isinstance(self.clipping, str):
            if self.clipping != "daciq":
                raise ConfigError(
                    f"clipping must be 'daciq' or a positive float alpha, not {self.clipping!r}"
                )
        elif isinstance(self.clipping, bool) or not isinstance(self.clipping, int | float):
            raise ConfigError(
                f"clipping must be 'daciq' or a positive float alpha, not {self.clipping!r}"
            )
        elif not (math.isfinite(self.clipping) and self.clipping > 0):
            raise ConfigError(f"a fixed clipping alpha must be finite and > 0, not {self.clipping}")
        if self.layout not in LAYOUTS:
            raise ConfigError(f"layout must be one of {LAYOUTS}, not {self.layout!r}")
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, not {self.mode!r}")
        _check_int("chunk_size", self.chunk_size, 1, 1 << 20)
        if self.background_randomness not in ("off", "wait", "online"):
            raise ConfigError(
                "background_randomness must be 'off', 'wait' or 'online', not "
                f"{self.background_randomness!r}"
            )
        _check_int("phe_frac_bits", self.phe_frac_bits, 1, 128)
        for name in ("allow_insecure", "short_exponent", "shared_decryption"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, not {getattr(self, name)!r}")
        if isinstance(self.round_timeout, bool) or not isinstance(self.round_timeout, int | float):
            raise ConfigError(
                f"round_timeout must be a number of seconds, not {self.round_timeout!r}"
            )
        if not self.round_timeout > 0:
            raise ConfigError(f"round_timeout must be > 0 seconds, not {self.round_timeout}")

    @property
    def clients(self) -> tuple[str, ...]:
        """The party names of the clients: ``client0`` .. ``client{n_clients-1}``."""
        return tuple(client_name(i) for i in range(self.n_clients))

    @property
    def parties(self) -> tuple[str, ...]:
        """Every party name of the federation: the aggregator then the clients."""
        return (self.aggregator, *self.clients)

    @property
    def encrypted(self) -> bool:
        """Whether this mode encrypts anything (every mode but ``"plain"``)."""
        return self.mode != "plain"

    def with_(self, **changes: object) -> BatchCryptConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)  # type: ignore[arg-type]


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, not {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, not {value}")
