"""Paillier obfuscators: the random factor r of a ciphertext (1 + m·n)·r mod n².

Three ways to draw r, all from the OS CSPRNG:

``"djn"`` (the default)
    Damgård–Jurik–Nielsen: r = h_sˣ mod n² with h_s = (−y²)ⁿ mod n² for a random y, and a fresh
    uniformly random exponent x of n_bits/2 bits per value (the standard choice of HEU and
    pypaillier). h_s is public and drawn once per process by whoever encrypts, so keys from phe or
    any other source work. Because the base is fixed, h_sˣ is computed from a precomputed table
    T[i][d] = h_s^(d·2^(w·i)) as a product of ⌈|x|/w⌉ table entries: no squarings at all.
``"djn-short"`` (opt-in)
    The same with |x| = 256 bits (2λ for λ = 128). Rests on the additional *short-exponent
    assumption* (that h_sˣ with a short x is indistinguishable from a random n-th residue).
``"rn"``
    Textbook r = rⁿ mod n² with r uniform in Z*_n, as phe does; kept for comparison.

The key holder computes the same distributions modulo p² and q² separately and combines them
by CRT (see :class:`CrtObfuscator`), which is several times cheaper.

Never reuse an obfuscator: two ciphertexts sharing r reveal m₁ − m₂.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from typing import Any

import gmpy2
import numpy as np
from gmpy2 import mpz

from hefl.crypto import _native
from hefl.errors import ConfigError

METHODS = ("djn", "djn-short", "rn")
SHORT_EXPONENT_BITS = 256  # 2λ for λ = 128
_BLOCK = 1024  # obfuscators per batch of random digits (a digit list costs ~4 KB per value)


def exponent_bits(n_bits: int, method: str) -> int:
    """Return the DJN exponent length |x| in bits for a key of ``n_bits`` bits."""
    if method == "djn-short":
        return min(SHORT_EXPONENT_BITS, n_bits // 2)
    return n_bits // 2


def check_method(method: str) -> str:
    """Validate an obfuscation method name.

    Raises:
        ConfigError: unknown method.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown obfuscation method {method!r}; choose one of {METHODS}")
    return method


def default_window(n_bits: int) -> int:
    """Window width w of the fixed-base table for a key of ``n_bits`` bits.

    Larger w means fewer multiplications per obfuscator (⌈|x|/w⌉) but a table of
    ⌈|x|/w⌉·(2ʷ−1) entries. w = 10 for a 2048-bit key costs ~55 MB and ~0.5 s once per
    process, and brings a 1024-bit exponent down to 103 multiplications; smaller keys (tests)
    use w = 8, whose digits are plain bytes.
    """
    return 10 if n_bits >= 2000 else 8


class FixedBaseTable:
    """Precomputed powers of one base modulo one modulus, for fast h^x with random x.

    With the native kernel (:mod:`hefl.crypto._native`) the table lives in one C array and
    the products run without the interpreter; otherwise as lists of gmpy2 numbers. Both give
    the same numbers.

    Args:
        base: the fixed base h (already reduced mod ``modulus``).
        modulus: the modulus (n², p² or q²).
        max_exp_bits: the largest exponent length that will be asked for.
        window: digit width w in bits (1..16).
        native: use the C kernel (default: whenever it is built).
        ifma: let the C kernel use AVX-512 IFMA where it can (default: unless ``HEFL_IFMA=0``).
    """

    def __init__(
        self,
        base: mpz,
        modulus: mpz,
        max_exp_bits: int,
        window: int,
        *,
        native: bool | None = None,
        ifma: bool | None = None,
    ) -> None:
        if not 1 <= window <= 16:
            raise ConfigError(f"window must be in 1..16 bits, got {window}")
        if max_exp_bits < 1:
            raise ConfigError(f"max_exp_bits must be positive, got {max_exp_bits}")
        self.base = mpz(base)
        self.modulus = mpz(modulus)
        self.window = window
        self.max_exp_bits = max_exp_bits
        self.n_windows = -(-max_exp_bits // window)
        self.native = _native.AVAILABLE if native is None else native
        if self.native:
            use_ifma = _native.IFMA if ifma is None else ifma
            self._kernel = _native.FixedBase(
                self.base, self.modulus, self.n_windows, window, ifma=use_ifma
            )
            return
        tables: list[list[mpz]] = []
        g = self.base
        for i in range(self.n_windows):
            # the last window only needs the bits that remain (e.g. 4 of 10 for 1024 bits)
            size = 1 << min(window, max_exp_bits - i * window)
            row = [mpz(1), g]
            acc = g
            for _ in range(size - 2):
                acc = acc * g % modulus
                row.append(acc)
            tables.append(row)
            # next window's base: g^(2^w)
            g = gmpy2.powmod(g, 1 << window, modulus) if size < (1 << window) else acc * g % modulus
        self.tables = tables

    def windows_for(self, exp_bits: int) -> int:
        """Number of windows (= multiplications + 1) needed for an exponent of ``exp_bits``."""
        if not 1 <= exp_bits <= self.max_exp_bits:
            raise ConfigError(f"table built for exponents of 1..{self.max_exp_bits} bits")
        return -(-exp_bits // self.window)

    def random_digits(self, count: int, exp_bits: int) -> np.ndarray:
        """Draw ``count`` uniformly random exponents of ``exp_bits`` bits as rows of
        little-endian w-bit digits (uint16 array of shape (count, windows); OS CSPRNG).

        Every digit is uniform and independent and the top digit keeps only the remaining
        bits, so the exponent is uniform over [0, 2^exp_bits).
        """
        k = self.windows_for(exp_bits)
        raw = np.frombuffer(secrets.token_bytes(count * k * 2), dtype="<u2").copy()
        raw &= np.uint16((1 << self.window) - 1)
        raw = raw.reshape(count, k)
        top_bits = exp_bits - (k - 1) * self.window
        if top_bits < self.window:
            raw[:, -1] &= (1 << top_bits) - 1
        return raw

    def powers(self, digits: np.ndarray) -> list[mpz]:
        """Return base^x mod modulus for every exponent x given as a row of digits."""
        if self.native:
            return self._kernel.powers(digits)
        tables = self.tables
        m = self.modulus
        out: list[mpz] = []
        append = out.append
        for row in digits.tolist():
            acc = tables[0][row[0]]
            i = 1
            for d in row[1:]:
                acc = acc * tables[i][d] % m
                i += 1
            append(acc)
        return out


def random_unit(n: mpz) -> mpz:
    """A uniformly random element of Z*_n from the OS CSPRNG."""
    bits = n.bit_length()
    while True:
        r = mpz(secrets.randbits(bits + 64)) % n
        if r > 1 and gmpy2.gcd(r, n) == 1:
            return r


def draw_djn_base(n: mpz) -> mpz:
    """Draw the public DJN base h_s = (−y²)ⁿ mod n² for a random unit y."""
    y = random_unit(n)
    h = (-(y * y)) % n
    return gmpy2.powmod(h, n, n * n)


# One table per (modulus, window), shared by every key object with the same modulus in this
# process (a PublicKey rebuilt from JSON or unpickled in a worker reuses it).
_TABLES: dict[tuple, Any] = {}
_LOCK = threading.Lock()


def cached_table(key: tuple, build: Callable[[], Any]) -> Any:
    """Return the process-wide table for ``key``, building it once (thread-safe)."""
    key = (*key, _native.AVAILABLE, _native.IFMA)  # a benchmark may switch kernels to compare
    table = _TABLES.get(key)
    if table is None:
        with _LOCK:
            table = _TABLES.get(key)
            if table is None:
                table = build()
                _TABLES[key] = table
    return table


def crt_window(n_bits: int) -> int:
    """Window of the key holder's tables modulo p² and q².

    With the native kernel a 2048-bit key uses w = 12: 86 instead of 103 multiplications per
    1024-bit exponent (−26 % time measured), for two C arrays of ~90 MB built in ~0.8 s each,
    once per process. The pure-Python tables stay at :func:`default_window` (as gmpy2 objects
    a w = 12 table would take ~4× the memory and seconds to build).
    """
    if _native.AVAILABLE and n_bits >= 2000:
        return 12
    return default_window(n_bits)


def short_window(n_bits: int) -> int:
    """Window of the separate short-exponent tables (built only when ``"djn-short"`` is used).

    A 256-bit exponent with w = 13 takes 20 multiplications instead of 26 with w = 10: the
    public table modulo n² is ~85 MB at 2048 bits (19·8191 + 511 entries), the key holder's
    tables modulo p² and q² ~42 MB each; only opt-in users pay for them.
    """
    return 13 if n_bits >= 2000 else default_window(n_bits)


def _large_spec(n_bits: int, method: str) -> tuple[str, int, int]:
    """(cache name, window, exponent bits) of the large public DJN table for ``method``."""
    if method == "djn-short" and short_window(n_bits) != default_window(n_bits):
        return "djn-short", short_window(n_bits), exponent_bits(n_bits, method)
    return "djn", default_window(n_bits), n_bits // 2


def djn_table(n: mpz, window: int | None = None, method: str = "djn") -> FixedBaseTable:
    """The process-wide DJN table modulo n² for ``method`` (h_s drawn on first use)."""
    n_bits = n.bit_length()
    name, w, bits = _large_spec(n_bits, method)
    if window is not None:
        name, w, bits = "djn", window, n_bits // 2
    return cached_table((name, int(n), w), lambda: FixedBaseTable(draw_djn_base(n), n * n, bits, w))


LIGHT_WINDOW = 8  # the table a process starts with; its digits are plain bytes

# obfuscators drawn with the public key so far in this process, per (n, method)
_DRAWN: dict[tuple[int, str], int] = {}


def _big_table_pays_after(n_bits: int, method: str) -> int:
    """Draws after which the large table has paid for itself against the light one: its
    extra entries (multiplications to build) over the multiplications it saves per draw."""
    _, w, bits = _large_spec(n_bits, method)
    saved = -(-bits // LIGHT_WINDOW) - -(-bits // w)
    if saved <= 0:
        return 0
    entries = sum((1 << min(w, bits - i * w)) - 1 for i in range(-(-bits // w)))
    return entries // saved


def _has_big_table(n: mpz, method: str) -> bool:
    name, w, _ = _large_spec(n.bit_length(), method)
    return (name, int(n), w, _native.AVAILABLE, _native.IFMA) in _TABLES


def public_table(n: mpz, method: str, count: int) -> FixedBaseTable:
    """The table for the next ``count`` public-key obfuscators of this process.

    A process that draws few obfuscators (a passive party re-randomizing a few hundred sealed
    histograms per tree) would spend far more building a large table (tens of MB, ~0.5 s at
    2048 bits) than using it, so it starts with a light 8-bit-window table and builds the
    large one once its draws make that pay. A large table already built (e.g. by
    :func:`djn_table` ahead of time) is always used.
    """
    n_bits = n.bit_length()
    drawn = _DRAWN.get((int(n), method), 0) + count
    _DRAWN[(int(n), method)] = drawn
    if drawn >= _big_table_pays_after(n_bits, method) or _has_big_table(n, method):
        return djn_table(n, method=method)
    bits = exponent_bits(n_bits, method)
    return cached_table(
        ("djn-light", method, int(n)),
        lambda: FixedBaseTable(draw_djn_base(n), n * n, bits, LIGHT_WINDOW),
    )


def public_obfuscators(n: mpz, count: int, method: str) -> list[mpz]:
    """Draw ``count`` fresh obfuscators modulo n² with the public key only."""
    check_method(method)
    if count == 0:
        return []
    nsq = n * n
    if method == "rn":
        return [gmpy2.powmod(random_unit(n), n, nsq) for _ in range(count)]
    table = public_table(n, method, count)
    bits = exponent_bits(n.bit_length(), method)
    out: list[mpz] = []
    for start in range(0, count, _BLOCK):  # bounded memory for the digit lists
        out.extend(table.powers(table.random_digits(min(_BLOCK, count - start), bits)))
    return out


class CrtObfuscator:
    """Key-holder obfuscators: the same distributions as :func:`public_obfuscators`, computed
    modulo p² and q² (half-size numbers) and combined by CRT.

    For ``"djn"`` the key holder uses its own base h_s (also drawn from the CSPRNG) with tables
    modulo p² and q², and the *same* exponent x on both sides, so r = h_sˣ mod n² exactly. For
    ``"rn"``, rⁿ mod p² depends only on r mod p, so r_p^(n mod p(p−1)) mod p² (and the same for
    q) is exactly rⁿ mod n² for a uniform r.
    """

    def __init__(self, p: mpz, q: mpz) -> None:
        self.p, self.q = mpz(p), mpz(q)
        self.n = self.p * self.q
        self.psq, self.qsq = self.p * self.p, self.q * self.q
        # r = r_p + p²·((r_q − r_p)·(p²)⁻¹ mod q²)
        self.psq_inv_mod_qsq = gmpy2.invert(self.psq, self.qsq)
        self.n_bits = self.n.bit_length()

    def combine(self, rp: list[mpz], rq: list[mpz]) -> list[mpz]:
        """CRT-combine residues mod p² and q² into residues mod n²."""
        psq, qsq, u = self.psq, self.qsq, self.psq_inv_mod_qsq
        return [a + psq * ((b - a) * u % qsq) for a, b in zip(rp, rq, strict=True)]

    def _tables(self, method: str) -> tuple[FixedBaseTable, FixedBaseTable]:
        # short exponents get their own small table: rows beyond 256 bits would never be read
        exp_bits = exponent_bits(self.n_bits, method)
        w = short_window(self.n_bits) if method == "djn-short" else crt_window(self.n_bits)

        def build() -> tuple[FixedBaseTable, FixedBaseTable]:
            hs = draw_djn_base(self.n)  # one base for both halves: r = h_sˣ mod n² exactly
            return (
                FixedBaseTable(hs % self.psq, self.psq, exp_bits, w),
                FixedBaseTable(hs % self.qsq, self.qsq, exp_bits, w),
            )

        return cached_table(("crt", method, int(self.n), w), build)

    def obfuscators(self, count: int, method: str) -> list[mpz]:
        """Draw ``count`` fresh obfuscators modulo n² (key-holder fast path)."""
        check_method(method)
        if count == 0:
            return []
        if method == "rn":
            ep = self.n % (self.p * (self.p - 1))
            eq = self.n % (self.q * (self.q - 1))
            rp, rq = [], []
            for _ in range(count):
                r = random_unit(self.n)
                rp.append(gmpy2.powmod(r % self.p, ep, self.psq))
                rq.append(gmpy2.powmod(r % self.q, eq, self.qsq))
            return self.combine(rp, rq)
        tp, tq = self._tables(method)
        bits = exponent_bits(self.n_bits, method)
        out: list[mpz] = []
        for start in range(0, count, _BLOCK):
            digits = tp.random_digits(min(_BLOCK, count - start), bits)
            out.extend(self.combine(tp.powers(digits), tq.powers(digits)))
        return out
