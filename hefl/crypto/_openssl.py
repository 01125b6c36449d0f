"""Modular exponentiation with a fixed secret exponent through the system's libcrypto.

Decryption raises every ciphertext to p − 1 modulo p² and to q − 1 modulo q² (2048-bit moduli,
1024-bit exponents for a 2048-bit key). OpenSSL's Montgomery exponentiation is about 1.3–1.4×
faster than GMP's ``mpz_powm`` for these sizes on x86-64 (0.78 ms against 1.07 ms measured
on the development machine), and its ``BN_mod_exp_mont_consttime`` runs in time independent of
the exponent, which ``mpz_powm`` does not; p − 1 and q − 1 are secret.

libcrypto is the library Python's own ``ssl`` and ``hashlib`` modules load, so it is present
wherever Python has TLS; it is reached with ``ctypes`` (no build step, no headers). It is used
only after a self-test against gmpy2 at first use; if the library is missing, lacks a symbol,
or disagrees, :func:`powmods` uses gmpy2 and gives the same numbers. ``HEFL_OPENSSL=0`` in the
environment forces gmpy2 (for comparison runs). ctypes releases the GIL during each call, so
threads can decrypt in parallel.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import secrets
import threading
from typing import Any

import gmpy2
from gmpy2 import mpz

from hefl.crypto import _native

_VP = ctypes.c_void_p
_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "BN_new": (_VP, []),
    "BN_free": (None, [_VP]),
    "BN_CTX_new": (_VP, []),
    "BN_bin2bn": (_VP, [ctypes.c_char_p, ctypes.c_int, _VP]),
    "BN_bn2binpad": (ctypes.c_int, [_VP, ctypes.c_char_p, ctypes.c_int]),
    "BN_MONT_CTX_new": (_VP, []),
    "BN_MONT_CTX_set": (ctypes.c_int, [_VP, _VP, _VP]),
    "BN_mod_exp_mont_consttime": (ctypes.c_int, [_VP, _VP, _VP, _VP, _VP, _VP]),
}
_MIN_BITS = 512  # below this the call overhead outweighs any gain; gmpy2 does small ones


def _load() -> Any:
    """libcrypto with the signatures set, or None."""
    if os.environ.get("HEFL_OPENSSL", "1") == "0":
        return None
    name = ctypes.util.find_library("crypto")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
        for symbol, (restype, argtypes) in _SIGNATURES.items():
            fn = getattr(lib, symbol)
            fn.restype, fn.argtypes = restype, argtypes
    except (OSError, AttributeError):
        return None
    return lib


def _bn(lib: Any, value: mpz) -> Any:
    data = int(value).to_bytes((int(value).bit_length() + 7) // 8 or 1, "big")
    bn = lib.BN_bin2bn(data, len(data), None)
    if not bn:
        raise MemoryError("BN_bin2bn failed")
    return bn


class _Exponentiator:
    """base^exponent mod modulus for many bases, with one Montgomery context per modulus.

    The exponent and modulus stay in OpenSSL numbers for the process's lifetime (a handful
    of keys per process); each thread gets its own scratch context.
    """

    def __init__(self, lib: Any, exponent: mpz, modulus: mpz) -> None:
        self.lib = lib
        self.modulus = modulus
        self.width = (modulus.bit_length() + 7) // 8
        self._local = threading.local()
        self._exp = _bn(lib, exponent)
        self._mod = _bn(lib, modulus)
        self._mont = lib.BN_MONT_CTX_new()
        if not self._mont or lib.BN_MONT_CTX_set(self._mont, self._mod, self._ctx()) != 1:
            raise MemoryError("BN_MONT_CTX_set failed")

    def _ctx(self) -> Any:
        ctx = getattr(self._local, "ctx", None)
        if ctx is None:
            ctx = self._local.ctx = self.lib.BN_CTX_new()
        return ctx

    def __call__(self, bases: list[mpz]) -> list[mpz]:
        lib, m, width = self.lib, self.modulus, self.width
        ctx, out_bn = self._ctx(), lib.BN_new()
        buf = ctypes.create_string_buffer(width)
        out: list[mpz] = []
        try:
            for b in bases:
                a = _bn(lib, b % m)
                ok = lib.BN_mod_exp_mont_consttime(out_bn, a, self._exp, self._mod, ctx, self._mont)
                lib.BN_free(a)
                if ok != 1 or lib.BN_bn2binpad(out_bn, buf, width) != width:
                    raise ArithmeticError("BN_mod_exp_mont_consttime failed")
                out.append(mpz.from_bytes(buf.raw, "big"))
        finally:
            lib.BN_free(out_bn)
        return out


_LIB: Any = None
_CHECKED = False
_CACHE: dict[tuple[int, int], _Exponentiator] = {}
_LOCK = threading.Lock()


def _library() -> Any:
    """The self-tested library, or None (checked once per process)."""
    global _LIB, _CHECKED
    with _LOCK:
        if not _CHECKED:
            _CHECKED = True
            lib = _load()
            if lib is not None and _self_test(lib):
                _LIB = lib
    return _LIB


def _self_test(lib: Any) -> bool:
    try:
        m = mpz(secrets.randbits(1024)) | 1 | (mpz(1) << 1023)
        e = mpz(secrets.randbits(512)) | 1
        bases = [mpz(secrets.randbits(1100)) for _ in range(3)]
        got = _Exponentiator(lib, e, m)(bases)
    except (ArithmeticError, MemoryError, OSError):
        return False
    return got == [gmpy2.powmod(b, e, m) for b in bases]


def available() -> bool:
    """Whether :func:`powmods` runs on libcrypto in this process."""
    return _library() is not None


def powmods(bases: list[mpz], exponent: mpz, modulus: mpz) -> list[mpz]:
    """``[b^exponent mod modulus for b in bases]`` for an odd modulus and a secret exponent.

    Uses hefl's own constant-time IFMA exponentiation where the CPU has AVX-512 IFMA
    (:func:`hefl.crypto._native.powm_ct`, 1.4× libcrypto at 2048-bit moduli), else libcrypto's
    constant-time Montgomery exponentiation when available (see the module docs), else gmpy2;
    the numbers are the same.
    """
    big = modulus.bit_length() >= _MIN_BITS
    if big and _native.ifma_takes(modulus):
        return _native.powm_ct(bases, exponent, modulus)
    lib = _library() if big and modulus % 2 else None
    if lib is None:
        return [gmpy2.powmod(b, exponent, modulus) for b in bases]
    key = (int(exponent), int(modulus))
    fn = _CACHE.get(key)
    if fn is None:
        with _LOCK:
            fn = _CACHE.setdefault(key, _Exponentiator(lib, exponent, modulus))
    return fn(bases)
