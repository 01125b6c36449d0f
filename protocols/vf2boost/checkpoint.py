"""Checkpoint and resume of a VF2Boost training.

Every party writes its own share after every tree into its own directory
(``<checkpoint_dir>/<party name>``, see :mod:`hefl._checkpoint`): a header tying it to the
training, and one record per tree holding the tree's structure (with the leaf weights at the
active party) and the split table entries the party made in it. The active party's record also
holds the tree's output on the training rows (a table of leaf weights and each row's index into
it, a byte or two per row), so that resuming rebuilds the margins with exactly the additions
an uninterrupted run made: the resumed trees, and the model, are then bit for bit those of an
uninterrupted run. Nothing in a training is drawn at random except encryption noise and the
candidates' ids, neither of which reaches the model. The private key is stored by the active
party only (file mode 0600); passive parties keep the key's fingerprint.

With an eval set, the record of a round's last tree is written after the round's evaluation and
also holds what early stopping needs (:mod:`~hefl.protocols.vf2boost.evaluation`): the metric
history, the best round, whether training stopped and the eval margins at the active party,
the verdict at a passive one. A resumed training then evaluates, stops and cuts exactly where
the uninterrupted one did.

At start, after the keys, every passive party sends the active party how many trees it holds
and a digest of each (:class:`ResumeHave`); the active party resumes everyone from the fewest
any party holds (:class:`ResumeFrom`), and a party that holds more drops the extra ones. A
party that keeps no checkpoint holds none, so a federation in which some party has trees and
another keeps no checkpoint is refused rather than silently restarted.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np

from hefl import Party
from hefl._checkpoint import (
    CheckpointDir,
    Header,
    agreed_steps,
    fingerprint,
    header_for,
    key_fingerprint,
)
from hefl._checkpoint import record_name as _name
from hefl.crypto import PrivateKey, PublicKey, generate_keypair
from hefl.errors import ConfigError, CryptoError, ProtocolError
from hefl.messages import Fields, Message, gather, recv, send
from hefl.protocols.vf2boost.binning import BINNING, check_features
from hefl.protocols.vf2boost.config import VF2BoostConfig
from hefl.protocols.vf2boost.frame import values_of
from hefl.protocols.vf2boost.model import PartyModel, TreeStructure
from hefl.protocols.vf2boost.reference import check_labels

KIND = "tree"
KEY_FILE = "paillier.key.json"
#: configuration fields a resumed training may change: more (or fewer) trees continue it
LOOSE = ("n_estimators",)
_DIGEST = 8  # bytes of each tree's digest in ResumeHave


@dataclass(frozen=True)
class ResumeHave(Message):
    """A passive party's checkpoint: how many trees it holds (-1: it keeps no checkpoint)
    and an 8-byte digest of each tree's structure."""

    TAG: ClassVar[str] = "vf2/resume/have"
    trees: int
    digests: bytes

    @classmethod
    def parse(cls, f: Fields) -> Self:
        trees = f.integer("trees", min=-1)
        return cls(trees, f.raw("digests", size=_DIGEST * max(trees, 0)))


@dataclass(frozen=True)
class ResumeFrom(Message):
    """The active party's decision: every party continues after this many trees."""

    TAG: ClassVar[str] = "vf2/resume/from"
    trees: int

    @classmethod
    def parse(cls, f: Fields) -> Self:
        return cls(f.integer("trees", min=0))


class TreeCheckpoint:
    """One party's checkpoint of a VF2Boost training; without a directory it keeps nothing
    (but still takes part in the agreement, holding no trees).

    Use :meth:`for_active` / :meth:`for_passive`. Then: :meth:`keypair` (active) or
    :meth:`check_key` (passive) once the keys are known, :meth:`agree` with the other
    parties, :meth:`restore` into the fresh model, and :meth:`save` after every tree.

    Args:
        directory: the checkpoint root (None: no checkpoint).
        resume: continue a checkpoint found there (else one found there is refused).
        header: what this training is.

    Raises:
        ConfigError: the directory holds a checkpoint of another training (names what
            differs), or one while ``resume`` is False, or an unreadable record.
    """

    def __init__(self, directory: str | os.PathLike[str] | None, resume: bool, header: Header):
        self.header = header
        self.dir = CheckpointDir(directory, header.party, resume) if directory else None
        self.records: list[dict[str, Any]] = []
        self.limit = int(header.config["n_estimators"])  # trees kept at most (see for_active)
        self._trees = 0  # trees of the model already in a record
        self._splits: set[Any] = set()  # split ids already in a record
        if self.dir is not None and self.dir.header is not None:
            self.dir.check(header, LOOSE)
            self.records = [self.dir.read(_name(KIND, i)) for i in self.dir.indices(KIND)]

    @classmethod
    def for_active(
        cls,
        directory: str | os.PathLike[str] | None,
        resume: bool,
        name: str,
        passives: list[str],
        cfg: VF2BoostConfig,
        data: tuple[np.ndarray, np.ndarray],
    ) -> TreeCheckpoint:
        """The checkpoint of active party ``name`` (``data``: its features and labels)."""
        parties = [name, *passives]
        ckpt = cls(directory, resume, _header(name, parties, name, cfg, fingerprint(*data)))
        ckpt.limit = cfg.n_trees  # every tree of every round (K per round with one_output_per_tree)
        return ckpt

    @classmethod
    def for_passive(
        cls,
        directory: str | os.PathLike[str] | None,
        resume: bool,
        name: str,
        parties: list[str],
        active: str,
        cfg: VF2BoostConfig,
        X: np.ndarray,
    ) -> TreeCheckpoint:
        """The checkpoint of passive party ``name`` of ``parties`` (``X``: its features)."""
        return cls(directory, resume, _header(name, parties, active, cfg, fingerprint(X)))

    # -- keys ------------------------------------------------------------------------------
    def keypair(
        self, given: tuple[PublicKey, PrivateKey] | None, cfg: VF2BoostConfig, party: Party
    ) -> tuple[PublicKey, PrivateKey] | None:
        """Active party: the training's keypair: the checkpoint's, else ``given``, else a
        fresh one; a fresh checkpoint stores it (mode 0600) before any passive party sees it.

        Returns:
            The keypair, or ``given`` unchanged without a checkpoint directory.

        Raises:
            ConfigError: ``given`` differs from the checkpoint's key, or the key file is
                missing or unreadable.
        """
        if self.dir is None:
            return given
        stored = self._stored_keypair()
        if stored is not None:
            if given is not None and given[0].n != stored[0].n:
                self.dir.check_key(key_fingerprint(given[0].n), "this run")
            return stored
        if given is None:
            with party.span("keygen"):
                given = generate_keypair(cfg.key_bits, allow_insecure=cfg.allow_insecure)
        self.dir.write_secret(KEY_FILE, given[1].to_json())
        self.dir.start(dataclasses.replace(self.header, key=key_fingerprint(given[0].n)), KIND)
        return given

    def _stored_keypair(self) -> tuple[PublicKey, PrivateKey] | None:
        assert self.dir is not None
        if self.dir.header is None:
            return None
        where = self.dir.path / KEY_FILE
        try:
            sk = PrivateKey.from_json(where.read_text())
        except (OSError, CryptoError) as exc:
            raise ConfigError(f"the checkpoint's private key {where} is unusable: {exc}") from None
        self.dir.check_key(key_fingerprint(sk.public_key.n), f"its key file {where.name}")
        return sk.public_key, sk

    def check_key(self, pk: PublicKey, index: int, active: str) -> None:
        """Passive party: refuse a checkpoint made under another key or party index; a fresh
        checkpoint starts now (with the key's fingerprint, never the key).

        Raises:
            ConfigError: the checkpoint is of another key or index.
        """
        if self.dir is None:
            return
        fp = key_fingerprint(pk.n)
        if self.dir.header is None:
            header = dataclasses.replace(self.header, key=fp, extra={"index": index})
            self.dir.start(header, KIND)
            return
        self.dir.check_key(fp, f"the active party {active!r}")
        if self.dir.header.extra.get("index") != index:
            raise ConfigError(
                f"the checkpoint in {self.dir.path} is of party index "
                f"{self.dir.header.extra.get('index')}, but {active!r} gives this party {index}"
            )

    # -- agreement -------------------------------------------------------------------------
    def _held(self) -> int:
        return -1 if self.dir is None else len(self.records)

    def _digests(self) -> bytes:
        return b"".join(_digest(r["trees"]) for r in self.records)

    async def agree(self, party: Party, active: str, passives: list[str]) -> int:
        """Agree with the other parties on the trees to keep; drop the rest.

        Args:
            party: this party.
            active: the active party's name.
            passives: the passive parties (used by the active party).

        Returns:
            How many trees every party keeps (training continues with the next).

        Raises:
            ConfigError: (active party) a party's trees differ from this party's, or some
                party has trees while another keeps no checkpoint.
            ProtocolError: (passive party) the active party asks for more trees than held.
        """
        if party.name == active:
            keep = await self._decide(party, passives)
        else:
            await send(party, active, ResumeHave(self._held(), self._digests()))
            keep = (await recv(party, active, ResumeFrom)).trees
            if keep > len(self.records):
                raise ProtocolError(
                    f"{active} sent a malformed ResumeFrom message: field 'trees' asks to keep "
                    f"{keep} trees, this party holds {len(self.records)}"
                )
        self.records = self.records[:keep]
        if self.dir is not None:
            await asyncio.to_thread(self.dir.drop, KIND, keep)
        return keep

    async def _decide(self, party: Party, passives: list[str]) -> int:
        haves = await gather(party, ResumeHave, peers=passives)
        held = {party.name: self._held(), **{n: h.trees for n, h in haves.items()}}
        keep = agreed_steps(held, self.limit, "hold trees", "party(ies)", "party")
        mine = self._digests()
        for name, have in haves.items():
            for t in range(keep):
                at = slice(_DIGEST * t, _DIGEST * (t + 1))
                if have.digests[at] != mine[at]:
                    raise ConfigError(
                        f"party {name!r}'s checkpoint has another tree {t} than party "
                        f"{party.name!r}'s: the checkpoints come from different trainings"
                    )
        for name in passives:
            await send(party, name, ResumeFrom(keep))
        return keep

    async def resume_passive(
        self, party: Party, active: str, model: PartyModel, key: PublicKey
    ) -> int:
        """Passive party, after the active party's setup: check the key and this party's
        index, agree on the trees to keep and put them into ``model``.

        Returns:
            The first tree to grow.

        Raises:
            ConfigError / ProtocolError: as :meth:`check_key`, :meth:`agree`, :meth:`restore`.
        """
        self.check_key(key, model.index, active)
        await self.agree(party, active, [])
        return self.restore(model)

    # -- trees -----------------------------------------------------------------------------
    def restore(self, model: PartyModel) -> int:
        """Put the kept trees and their split table entries into the fresh ``model``.

        Returns:
            The number of loop steps (trees) restored: training continues with the next.

        Raises:
            ConfigError: a malformed record (names the file).
        """
        for t, rec in enumerate(self.records):
            try:
                model.trees.extend(TreeStructure(**tree) for tree in rec["trees"])
                for k, v in rec["splits"]:
                    model.splits[k] = tuple(v)
            except (KeyError, TypeError, ValueError) as exc:
                raise self._malformed(t, exc) from None
        self._trees, self._splits = len(model.trees), set(model.splits)
        return len(self.records)

    def replay(
        self,
        margin: np.ndarray,
        add: Callable[[np.ndarray, int, np.ndarray], None] | None = None,
    ) -> np.ndarray:
        """Active party: ``margin`` plus every restored tree's output, added in training
        order (the same float additions an uninterrupted run made); ``add(margin, t, out)``
        adds tree ``t``'s output in place where a tree adds to one class's column.

        Raises:
            ConfigError: a malformed record (names the file).
        """
        for t, rec in enumerate(self.records):
            try:
                out = _unpack_output(rec["out"])
            except (KeyError, TypeError, ValueError) as exc:
                raise self._malformed(t, exc) from None
            if add is None:
                margin = margin + out
            else:
                add(margin, t, out)
        return margin

    def _malformed(self, t: int, exc: Exception) -> ConfigError:
        where = self.dir.path if self.dir is not None else "?"
        return ConfigError(f"malformed checkpoint record {where}/{_name(KIND, t)}: {exc!r}")

    def round_state(self, per_round: int) -> tuple[int, Any, str]:
        """The evaluation state recorded with the last whole round kept.

        Args:
            per_round: trees per round (K with ``one_output_per_tree``, else 1).

        Returns:
            (whole rounds kept, that round's ``eval`` entry or None, the record's path for
            messages); (0, None, "") when no round is whole.
        """
        rounds = len(self.records) // per_round
        if rounds == 0:
            return 0, None, ""
        root = self.dir.path if self.dir is not None else "?"
        where = f"{root}/{_name(KIND, rounds * per_round - 1)}"
        return rounds, self.records[rounds * per_round - 1].get("eval"), where

    async def save(
        self,
        t: int,
        model: PartyModel,
        out: np.ndarray | None = None,
        evaluation: dict[str, Any] | None = None,
    ) -> None:
        """Record what tree ``t`` added to ``model`` (and, active party, its output on the
        training rows; with an eval set, after a round's last tree, the evaluation state),
        durably, before the next tree starts."""
        new_splits = [[k, list(v)] for k, v in model.splits.items() if k not in self._splits]
        record = {
            "t": t,
            "trees": [dataclasses.asdict(tree) for tree in model.trees[self._trees :]],
            "splits": new_splits,
            "out": None if out is None else _pack_output(out),
        }
        if evaluation is not None:
            record["eval"] = evaluation
        self._trees = len(model.trees)
        self._splits.update(k for k, _ in new_splits)
        if self.dir is not None:
            await asyncio.to_thread(self.dir.write, _name(KIND, t), record)


def _header(name: str, parties: list[str], active: str, cfg: VF2BoostConfig, data: str) -> Header:
    # the binning rule rides with the configuration: a checkpoint whose trees were grown on
    # other cut points (an older hefl's) is refused rather than continued on these
    config = {**cfg.to_dict(), "binning": BINNING}
    return header_for("vf2boost", name, set(parties), {"active": active}, config, data)


def _digest(trees: list[dict[str, Any]]) -> bytes:
    text = json.dumps([tree["nodes"] for tree in trees], sort_keys=True)
    return hashlib.sha256(text.encode()).digest()[:_DIGEST]


def _pack_output(out: np.ndarray) -> dict[str, Any]:
    """A tree's output per row, exactly: its distinct float64 bit patterns and each row's
    index into them (one byte per row up to 256 leaves)."""
    bits = np.ascontiguousarray(out, dtype=np.float64).view(np.uint64)
    table, index = np.unique(bits.ravel(), return_inverse=True)
    dtype = np.uint8 if len(table) <= 1 << 8 else np.uint16 if len(table) <= 1 << 16 else np.uint32
    return {
        "shape": list(bits.shape),
        "table": [int(v) for v in table],
        "dtype": np.dtype(dtype).str,
        "index": base64.b64encode(index.astype(dtype).tobytes()).decode(),
    }


def _unpack_output(d: dict[str, Any]) -> np.ndarray:
    table = np.array([int(v) for v in d["table"]], dtype=np.uint64)
    index = np.frombuffer(base64.b64decode(d["index"]), dtype=np.dtype(d["dtype"]))
    if index.size and int(index.max()) >= len(table):
        raise ValueError("a row's index is past the table of outputs")
    return table[index].view(np.float64).reshape([int(s) for s in d["shape"]])


def with_checkpoints(
    roles: dict[str, Any], directory: str | os.PathLike[str] | None, resume: bool
) -> dict[str, Any]:
    """The VF2Boost roles of a run, each saving into (and resuming from) its own
    ``<directory>/<party name>``; unchanged without a directory.

    Args:
        roles: ``{name: role}`` of :func:`active_party` / :func:`passive_party` partials.
        directory: the checkpoint root (made absolute: party processes may start elsewhere).
        resume: continue the checkpoints found there.

    Raises:
        ConfigError: ``resume`` without a directory, or a party's checkpoint there that is
            refused (checked here, before any party starts, when the roles are the partials
            :func:`~hefl.protocols.vf2boost.fit` makes).
    """
    if directory is None:
        if resume:
            raise ConfigError("resume=True needs checkpoint_dir (where the checkpoints are)")
        return roles
    where = os.path.abspath(directory)
    _precheck(roles, where, resume)
    return {
        name: functools.partial(role, checkpoint_dir=where, resume=resume)
        for name, role in roles.items()
    }


def _precheck(roles: dict[str, Any], where: str, resume: bool) -> None:
    """Open every party's checkpoint as its role will, so that a refused one fails the call
    with its ConfigError before any party starts (the roles check again when they run)."""
    names = list(roles)
    for name, role in roles.items():
        kw = getattr(role, "keywords", {})
        if "X" not in kw or "cfg" not in kw:
            continue
        who, cfg = f"party {name!r}", kw["cfg"]
        X = values_of(check_features(kw["X"], who=who), who)  # what the role fingerprints
        if "y" in kw and "passives" in kw:
            y = check_labels(kw["y"], X.shape[0], who, cfg.objective, cfg.num_class)
            ck = TreeCheckpoint.for_active(where, resume, name, kw["passives"], cfg, (X, y))
            if kw.get("keypair") is not None and ck.dir is not None:
                ck.dir.check_key(key_fingerprint(kw["keypair"][0].n), "this run")
        elif "active" in kw:
            TreeCheckpoint.for_passive(where, resume, name, names, kw["active"], cfg, X)


__all__ = ["ResumeFrom", "ResumeHave", "TreeCheckpoint", "with_checkpoints"]
