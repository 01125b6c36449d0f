"""``aggregate_local``: one full secure BatchCrypt round inside one process."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from hefl.errors import ConfigError
from hefl.protocols.batchcrypt.aggregator import aggregator
from hefl.protocols.batchcrypt.client import OneShot, client
from hefl.protocols.batchcrypt.config import BatchCryptConfig, client_name


def check_vectors(vectors: Sequence[np.ndarray], cfg: BatchCryptConfig) -> list[np.ndarray]:
    """Refuse inconsistent client vectors up front, naming the client (index) at fault.

    Raises:
        ConfigError: no vectors, more vectors than ``cfg.n_clients``, non-float or non-1-D
            vectors, different lengths or dtypes, NaN/inf values.
    """
    if isinstance(vectors, np.ndarray) and vectors.ndim == 2:
        vectors = list(vectors)
    if not isinstance(vectors, Sequence) or len(vectors) == 0:
        raise ConfigError("aggregate_local needs a non-empty list of vectors, one per client")
    if len(vectors) > cfg.n_clients:
        raise ConfigError(
            f"{len(vectors)} vectors but the configuration plans for n_clients={cfg.n_clients}; "
            "the lanes would overflow: raise n_clients"
        )
    arrays = [np.asarray(v) for v in vectors]
    ref = arrays[0]
    for i, a in enumerate(arrays):
        who = client_name(i)
        if a.ndim != 1 or a.dtype.kind != "f":
            raise ConfigError(
                f"{who}: expected a 1-D float vector, got shape {a.shape} dtype {a.dtype}"
            )
        if a.shape != ref.shape:
            raise ConfigError(f"{who}: has {a.size} values, {client_name(0)} has {ref.size}")
        if a.dtype != ref.dtype:
            raise ConfigError(f"{who}: dtype {a.dtype} differs from {client_name(0)}'s {ref.dtype}")
        bad = int(np.count_nonzero(~np.isfinite(a)))
        if bad:
            raise ConfigError(f"{who}: {bad} NaN or infinite value(s)")
    if ref.size == 0:
        raise ConfigError("the vectors are empty")
    return arrays


def aggregate_local(
    vectors: Sequence[np.ndarray],
    cfg: BatchCryptConfig,
    *,
    layer_sizes: Sequence[int] | None = None,
    **run_options: Any,
) -> np.ndarray:
    """Run one full secure aggregation round in this process, one client per vector.

    Every step of the federated protocol runs (key generation and distribution, dACIQ start-up
    exchange, quantize, pack, encrypt, stream, homomorphic sum, (shared) decryption, decode)
    on the in-process transport.

    Scripts: the crypto work runs in worker processes, which re-import the main script; a
    script calling this must keep its top-level code under ``if __name__ == "__main__":``
    (hefl raises ConfigError otherwise).

    Args:
        vectors: one 1-D float vector per client (same length and dtype).
        cfg: the configuration (``mode`` selects batchcrypt / phe / plain).
        layer_sizes: split of the vector into layers, each with its own dACIQ α.
        **run_options: passed to :func:`hefl.run` (e.g. ``transport="zmq"``).

    Returns:
        The decoded sum over the clients as the clients see it (float64). With quantization
        each value is within k quantization steps of the exact sum of the clipped values.

    Raises:
        ConfigError: inconsistent vectors (naming the client), NaN/inf, too many clients, or a
            call from an unguarded script's top level.
    """
    import hefl

    arrays = check_vectors(vectors, cfg)
    roles: dict[str, Any] = {cfg.aggregator: functools.partial(aggregator, cfg=cfg)}
    for i, a in enumerate(arrays):
        roles[client_name(i)] = functools.partial(client, cfg=cfg, work_=OneShot(a, layer_sizes))
    run_options.setdefault("recv_timeout", cfg.round_timeout)
    results = hefl.run(roles, **run_options)
    return np.asarray(results[client_name(0)], dtype=np.float64)
