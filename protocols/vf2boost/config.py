"""VF2BoostConfig: the validated settings of one federated GBDT training.

Names follow XGBoost where a parameter means the same thing (``n_estimators``, ``max_depth``,
``learning_rate``, ``reg_lambda``, ``gamma``, ``min_child_weight``, ``max_bin``,
``base_score``), so a user can move parameters between the two without surprises.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from hefl.errors import ConfigError

ENCODINGS = ("fixed", "phe")
MIN_SECURE_KEY_BITS = 2048


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class VF2BoostConfig:
    """Settings of a VF2Boost / SecureBoost training (binary logistic loss).

    Ties between equal gains are always broken by (party index, feature index, bin), the
    same way in the federated protocol and in :func:`plaintext_reference`.

    Attributes:
        n_estimators: number of trees (>= 1).
        max_depth: depth of each tree (1..16; depth d has at most 2^d leaves).
        learning_rate: shrinkage applied to every leaf weight, in (0, 1].
        reg_lambda: L2 regularisation λ on leaf weights (>= 0).
        gamma: minimum gain (½-scaled, as in the SecureBoost gain formula) a split must exceed.
        min_child_weight: minimum hessian sum in each child of a split (>= 0).
        max_bin: most value bins per feature (2..256). Missing values (NaN) get one extra,
            dedicated bin 0 that always goes to the left child.
        base_score: initial prediction as a probability in (0, 1) (XGBoost's convention);
            None means the label mean. The initial margin is logit(base_score).
        key_bits: Paillier modulus size. Below 2048 only with ``allow_insecure=True``.
        allow_insecure: explicit opt-in for keys smaller than 2048 bits (tests, demos).
        frac_bits: fixed-point precision of g and h (one global scale 2^frac_bits).
        chunk_size: rows per encrypted chunk streamed from the active party.
        blaster: pipeline encryption, transfer and histogram building chunk by chunk (else
            encrypt everything, then send, then build).
        optimistic: the active party splits on its own best candidate while passive parties'
            histograms are in flight; a miss is rolled back (reveals a tentative partition).
        reorder: for ``encoding="phe"``, group ciphertexts by exponent before adding.
        pack_gh: pack g and h into one plaintext before encryption (halves the work).
        pack_histograms: Horner-pack several histogram bins into one ciphertext before
            sending them to the active party (fewer decryptions, fewer bytes).
        precompute: the active party keeps a pool of Paillier obfuscators filled in the
            background (one process), so idle time makes next tree's randomness and
            encryption on the critical path is a multiplication per value.
        encoding: ``"fixed"`` (one global fixed-point scale) or ``"phe"`` (phe-compatible
            per-value base-16 exponents; needs rescaling when adding).
        obfuscation: how the active party draws Paillier obfuscators: ``"djn"`` (default),
            ``"djn-short"`` (opt-in short exponents, extra assumption) or ``"rn"`` (textbook).
        workers: processes for crypto work per party (None: the runtime's default).
    """

    n_estimators: int = 10
    max_depth: int = 5
    learning_rate: float = 0.3
    reg_lambda: float = 1.0
    gamma: float = 0.0
    min_child_weight: float = 1.0
    max_bin: int = 32
    base_score: float | None = None
    key_bits: int = 2048
    allow_insecure: bool = False
    frac_bits: int = 53
    chunk_size: int = 4096
    blaster: bool = True
    optimistic: bool = True
    reorder: bool = True
    pack_gh: bool = True
    pack_histograms: bool = True
    encoding: str = "fixed"
    obfuscation: str = "djn"
    precompute: bool = True
    workers: int | None = None

    def __post_init__(self) -> None:
        self._validate()

    def _validate(self) -> None:
        def bad(name: str, what: str) -> ConfigError:
            return ConfigError(f"VF2BoostConfig.{name}={getattr(self, name)!r}: {what}")

        for name, lo, hi in (
            ("n_estimators", 1, 100_000),
            ("max_depth", 1, 16),
            ("max_bin", 2, 256),
            ("frac_bits", 8, 62),
            ("chunk_size", 1, 10_000_000),
        ):
            v = getattr(self, name)
            if not _is_int(v) or not lo <= v <= hi:
                raise bad(name, f"must be an int in [{lo}, {hi}]")
        if not _is_real(self.learning_rate) or not 0 < self.learning_rate <= 1:
            raise bad("learning_rate", "must be a number in (0, 1]")
        for name in ("reg_lambda", "gamma", "min_child_weight"):
            v = getattr(self, name)
            if not _is_real(v) or v < 0:
                raise bad(name, "must be a finite number >= 0")
        if self.base_score is not None and (
            not _is_real(self.base_score) or not 0 < self.base_score < 1
        ):
            raise bad("base_score", "must be a probability in (0, 1) or None (label mean)")
        if not _is_int(self.key_bits) or self.key_bits < 256 or self.key_bits % 2:
            raise bad("key_bits", "must be an even int >= 256 (2048 or more for real use)")
        if self.key_bits < MIN_SECURE_KEY_BITS and not self.allow_insecure:
            raise bad(
                "key_bits",
                f"keys below {MIN_SECURE_KEY_BITS} bits are insecure; pass "
                "allow_insecure=True to use them in tests or demos",
            )
        for name in (
            "allow_insecure",
            "blaster",
            "optimistic",
            "reorder",
            "pack_gh",
            "pack_histograms",
            "precompute",
        ):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "must be True or False")
        if self.encoding not in ENCODINGS:
            raise bad("encoding", f"must be one of {ENCODINGS}")
        if self.obfuscation not in ("djn", "djn-short", "rn"):
            raise bad("obfuscation", "must be 'djn', 'djn-short' or 'rn'")
        if self.encoding == "phe" and (self.pack_gh or self.pack_histograms):
            raise ConfigError(
                "VF2BoostConfig: encoding='phe' carries a per-value exponent and cannot be "
                "packed; set pack_gh=False and pack_histograms=False (or use encoding='fixed')"
            )
        if self.encoding == "phe" and self.frac_bits > 53:
            raise bad("frac_bits", "must be <= 53 with encoding='phe' (a float holds 53 bits)")
        if self.workers is not None and (not _is_int(self.workers) or self.workers < 1):
            raise bad("workers", "must be None or an int >= 1")

    def replace(self, **changes: Any) -> VF2BoostConfig:
        """Return a copy with some fields changed (validated again).

        Raises:
            ConfigError: an unknown field name or an invalid value.
        """
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ConfigError(f"unknown VF2BoostConfig field(s) {unknown}; known: {sorted(names)}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def serial_baseline(cls, **overrides: Any) -> VF2BoostConfig:
        """The protocol as FATE-style SecureBoost runs it: the peer VF2Boost is measured against.

        One phe-style ciphertext per g and per h (``encoding="phe"``, no re-ordering), textbook
        rⁿ obfuscators made on demand with the public key (as phe does), no pipelining
        (encrypt all, then send, then build), no optimistic splitting, no packing.

        Args:
            overrides: any other fields (e.g. ``n_estimators``, ``key_bits``).

        Raises:
            ConfigError: an invalid override.
        """
        base: dict[str, Any] = {
            "blaster": False,
            "optimistic": False,
            "reorder": False,
            "pack_gh": False,
            "pack_histograms": False,
            "encoding": "phe",
            "obfuscation": "rn",
            "precompute": False,
        }
        base.update(overrides)
        return cls.from_dict(base)  # an unknown override is a ConfigError, not a TypeError

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VF2BoostConfig:
        """Build from a dict (e.g. parsed TOML/JSON), refusing unknown keys.

        Raises:
            ConfigError: unknown keys or invalid values.
        """
        if not isinstance(d, dict):
            raise ConfigError(f"a VF2BoostConfig needs a dict, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown VF2BoostConfig field(s) {unknown}; known: {sorted(names)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (JSON-serialisable)."""
        return dataclasses.asdict(self)
