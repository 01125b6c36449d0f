"""The message tags of the VF2Boost protocol, in one place for both roles.

Setup and prediction (one exchange each):

* ``vf2/hello``: passive -> active, its row and feature counts and its config.
* ``vf2/setup``: active -> passive, the public key, the party's index and the row count.
* ``vf2/predict``: passive -> active, its leaf masks of the rows to score.

Per tree ``t`` and layer ``d``:

* ``vf2/gh/{t}``: active -> passive, the encrypted g/h (a stream of chunks with ``blaster``,
  one message without).
* ``vf2/layer/{t}/{d}``: active -> passive, the splits of the last layer and the open nodes
  (with the tree's structure when none is left open).
* ``vf2/spec/{t}/{d}``: active -> passive, the tentative splits (``optimistic`` only).
* ``vf2/hist/{t}/{d}/{node}``: passive -> active, one open node's sealed candidates.
* ``vf2/win/{t}/{d}``: active -> passive, the winning split ids among its candidates.
* ``vf2/place/{t}/{d}``: passive -> active, which rows of each won node go left.

The strings are part of the wire protocol (and fault-injection tests match them): change
them only together with every peer.
"""

from __future__ import annotations

HELLO = "vf2/hello"
SETUP = "vf2/setup"
PREDICT = "vf2/predict"

# the per-tree kinds, in protocol order; "vf2/{kind}/{t}" prefixes every message of tree t
_TREE_KINDS = ("gh", "layer", "spec", "hist", "win", "place")


def gh(t: int) -> str:
    """Tree ``t``'s encrypted gradients and hessians."""
    return f"vf2/gh/{t}"


def layer(t: int, d: int) -> str:
    """Layer ``d`` of tree ``t``: the last layer's splits and the open nodes."""
    return f"vf2/layer/{t}/{d}"


def spec(t: int, d: int) -> str:
    """The active party's tentative splits of layer ``d`` (optimistic splitting)."""
    return f"vf2/spec/{t}/{d}"


def hist(t: int, d: int, node: int | None = None) -> str:
    """One open node's sealed candidates (without ``node``: the layer's prefix)."""
    return f"vf2/hist/{t}/{d}" if node is None else f"vf2/hist/{t}/{d}/{node}"


def win(t: int, d: int) -> str:
    """The winning split ids of layer ``d``."""
    return f"vf2/win/{t}/{d}"


def place(t: int, d: int) -> str:
    """The owners' placements (rows going left) of layer ``d``'s passive splits."""
    return f"vf2/place/{t}/{d}"


def tree_tags(t: int) -> tuple[str, ...]:
    """The tag prefixes of tree ``t``'s messages (retired when the tree is done)."""
    return tuple(f"vf2/{kind}/{t}" for kind in _TREE_KINDS)
