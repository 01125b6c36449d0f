"""Build hook for hefl's one optional C extension; all metadata lives in pyproject.toml.

``hefl.crypto._cmodmul`` (native modular-product loops over GMP, with AVX-512 IFMA paths on
x86-64 in the headers it includes) is built when a C compiler and GMP's headers
(``libgmp-dev``) are present. ``optional=True`` turns a failed build into a
warning: hefl then runs its pure-Python gmpy2 loops, which compute the same numbers.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "hefl.crypto._cmodmul",
            ["hefl/crypto/_cmodmul.c"],
            depends=["hefl/crypto/_ifma.h", "hefl/crypto/_ifma_ops.h"],
            libraries=["gmp"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
