"""Homomorphic sums per group id, the histogram primitive behind ``CipherVector.group_sum``.

Products modulo n² of the ciphertexts that share a group id. Two ways that give the same
numbers: gmpy2 products one ciphertext at a time, and the native IFMA kernel
(:func:`hefl.crypto._native.group_sums`), which takes every column in one pass over the rows.
Columns with few joint values are summed through their joint cells either way
(:func:`joint_columns`).
"""

from __future__ import annotations

import numpy as np
from gmpy2 import mpz

from hefl.crypto import _native

_ONE = mpz(1)


def group_sum_1d(cs: list[mpz], ids: list[int], n_groups: int, nsq: mpz) -> list[mpz]:
    acc: list[mpz | None] = [None] * n_groups
    for c, g in zip(cs, ids, strict=True):
        a = acc[g]
        acc[g] = c if a is None else a * c % nsq
    return [_ONE if a is None else a for a in acc]


def native_group_sums(cs: list[mpz], g: np.ndarray, n_groups: int, nsq: mpz) -> list[mpz]:
    """:meth:`~hefl.crypto.CipherVector.group_sum` of 2-D ids with the native kernel: the same joint-cell
    plan as the gmpy2 loop, but every column and joint cell in one pass over the rows (each
    ciphertext enters Montgomery form once), then each joint group's columns from its cells."""
    plan = joint_columns(g) if len(cs) else [([f], g[:, f]) for f in range(g.shape[1])]
    first = [g[:, cols[0]] if len(cols) == 1 else cell for cols, cell in plan]
    width = max([n_groups] + [int(c.max()) + 1 for c in first if c.size])
    out = _native.group_sums(cs, np.stack(first, axis=1), width, nsq)
    sums: list[list[mpz]] = [[] for _ in range(g.shape[1])]
    for i, (cols, cell) in enumerate(plan):
        block = out[i * width : (i + 1) * width]
        if len(cols) == 1:
            sums[cols[0]] = block[:n_groups]
            continue
        n_cells = int(cell.max()) + 1
        cell_ids = np.empty((n_cells, len(cols)), dtype=np.int64)
        cell_ids[cell] = g[:, cols]
        marginals = _native.group_sums(block[:n_cells], cell_ids, n_groups, nsq)
        for j, f in enumerate(cols):
            sums[f] = marginals[j * n_groups : (j + 1) * n_groups]
    return [c for col in sums for c in col]


def joint_columns(g: np.ndarray) -> list[tuple[list[int], np.ndarray]]:
    """Group the columns of a 2-D id array so their histograms need fewer additions.

    Summing F columns separately costs F additions per row. Columns whose *joint* ids take few
    distinct values (categorical features, or two features of 32 bins over many rows) are
    summed once per row into their joint cells, and each column's sums are then added up from
    the cells: n + cells·k additions for k columns instead of n·k. The products are the same
    numbers either way (multiplication mod n² is associative and commutative).

    Columns are taken from the fewest distinct ids up and added to the open group while that
    costs fewer additions than summing the column on its own.

    Returns:
        ``(columns, cell)`` per group: ``cell`` maps each row to its joint cell id in
        [0, cells) (for a single column, its own ids renumbered without gaps).
    """
    n, n_cols = g.shape
    if n == 0:
        return [([f], g[:, f]) for f in range(n_cols)]
    distinct = [int(np.count_nonzero(np.bincount(g[:, f]))) for f in range(n_cols)]
    groups: list[tuple[list[int], np.ndarray]] = []
    cols: list[int] = []
    cell = np.zeros(n, dtype=np.int64)
    cells = 1
    for f in sorted(range(n_cols), key=distinct.__getitem__):
        if cols:
            width = int(g[:, f].max()) + 1
            ids, merged = np.unique(cell * width + g[:, f], return_inverse=True)
            # additions: the cells' marginals grow; the column's own pass over the rows goes
            extra = len(ids) * (len(cols) + 1) - (cells * len(cols) if len(cols) > 1 else 0)
            if extra < n:
                cols.append(f)
                cell, cells = merged.astype(np.int64), len(ids)
                continue
            groups.append((cols, cell))
        cols = [f]
        ids, first = np.unique(g[:, f], return_inverse=True)
        cell, cells = first.astype(np.int64), len(ids)
    if cols:
        groups.append((cols, cell))
    return groups
