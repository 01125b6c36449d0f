"""Crash-safe checkpoint files, shared by the protocols' checkpoints.

A party's checkpoint is a directory of its own (``<root>/<party name>``, mode 0700) holding
small JSON files (mode 0600): ``header.json``, which ties the checkpoint to one training (the
protocol, this party, the federation's parties, the configuration, a digest of this party's
data and, once keys are agreed, the fingerprint of the training's public key), and the
records the protocol writes after every tree or round. Every file is written atomically: to a
temporary file in the same directory, flushed and fsynced, renamed over the old name, then the
directory is fsynced, so a crash at any instant leaves either the old file or the new one,
never a torn one.

Nothing here knows a protocol: :mod:`hefl.protocols.vf2boost.checkpoint` and
:mod:`hefl.protocols.batchcrypt.checkpoint` say what goes into the records.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hefl.errors import ConfigError

FORMAT = "hefl.checkpoint/1"
HEADER = "header.json"
_RECORD = re.compile(r"^(?P<kind>[a-z]+)-(?P<index>\d{6})\.json$")


def fingerprint(*arrays: Any) -> str:
    """A sha256 over arrays' dtypes, shapes and bytes (what a checkpoint's data was).

    Args:
        arrays: numpy arrays (or anything ``np.asarray`` takes).

    Returns:
        The hex digest.
    """
    h = hashlib.sha256()
    for a in arrays:
        arr = np.ascontiguousarray(a)
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def key_fingerprint(n: int) -> str:
    """The fingerprint of a Paillier public key: sha256 of its modulus in hex."""
    return hashlib.sha256(format(int(n), "x").encode()).hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably (mode 0600).

    Raises:
        OSError: the file system refused (full disk, permissions).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sync_dir(path.parent)


def sync_dir(directory: Path) -> None:
    """fsync a directory, so a rename or unlink in it survives a crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Header:
    """What ties a checkpoint to one training.

    Attributes:
        protocol: ``"vf2boost"`` or ``"batchcrypt"``.
        party: this party's name.
        parties: every party of the federation, sorted.
        roles: who plays which part (e.g. ``{"active": "bank"}``).
        config: the training's configuration as a plain dict.
        data: :func:`fingerprint` of this party's training data.
        key: :func:`key_fingerprint` of the training's public key ("" when keys are not kept).
    """

    protocol: str
    party: str
    parties: list[str]
    roles: dict[str, str]
    config: dict[str, Any]
    data: str
    key: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return json.dumps({"format": FORMAT, **asdict(self)}, sort_keys=True).encode()

    @classmethod
    def from_dict(cls, d: Any, where: Path) -> Header:
        """Parse a header file's contents.

        Raises:
            ConfigError: not a hefl checkpoint header (names the file).
        """
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ConfigError(f"{where} is not a hefl checkpoint header (format {FORMAT!r})")
        try:
            return cls(**{k: v for k, v in d.items() if k != "format"})
        except TypeError as exc:
            raise ConfigError(f"{where} is a malformed checkpoint header: {exc}") from None

    def differences(self, now: Header, loose: Iterable[str] = ()) -> list[str]:
        """What differs between this (stored) header and ``now``'s, in words.

        Args:
            now: the header of the run that wants to resume.
            loose: configuration fields allowed to differ (e.g. the number of trees).
        """
        out = []
        for name in ("protocol", "party", "parties", "roles"):
            if getattr(self, name) != getattr(now, name):
                out.append(f"{name}: {getattr(self, name)!r} there, {getattr(now, name)!r} now")
        skip = set(loose)
        for name in sorted((set(self.config) | set(now.config)) - skip):
            was, is_ = self.config.get(name, "<unset>"), now.config.get(name, "<unset>")
            if was != is_:
                out.append(f"configuration field {name!r}: {was!r} there, {is_!r} now")
        if self.data != now.data:
            out.append("this party's training data (another data digest)")
        return out


class CheckpointDir:
    """One party's checkpoint directory: the header and numbered JSON records.

    Args:
        root: the checkpoint root given by the user (``<root>/<party>`` is this party's).
        name: this party's name.
        resume: whether an existing checkpoint may be continued.

    Raises:
        ConfigError: the directory holds a checkpoint but ``resume`` is False (it is never
            overwritten silently), or its header is unreadable.
        OSError: the directory cannot be created.
    """

    def __init__(self, root: str | os.PathLike[str], name: str, resume: bool) -> None:
        self.path = Path(root) / name
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.header: Header | None = None
        where = self.path / HEADER
        if where.exists():
            self.header = Header.from_dict(self.read(HEADER), where)
            if not resume:
                raise ConfigError(
                    f"{self.path} holds a checkpoint of party {name!r}; pass resume=True "
                    "(hefl party --resume) to continue it, or remove it to start afresh"
                )

    def check(self, now: Header, loose: Iterable[str] = ()) -> None:
        """Refuse a checkpoint of another training.

        Raises:
            ConfigError: naming every field that differs and both values.
        """
        if self.header is None:
            return
        diff = self.header.differences(now, loose)
        if diff:
            raise ConfigError(
                f"the checkpoint in {self.path} is of another training; it differs in "
                + "; ".join(diff)
            )

    def check_key(self, fp: str, who: str) -> None:
        """Refuse a checkpoint made under another public key.

        Raises:
            ConfigError: naming both fingerprints.
        """
        if self.header is not None and self.header.key and self.header.key != fp:
            raise ConfigError(
                f"the checkpoint in {self.path} was made under Paillier key {self.header.key[:16]}"
                f"..., but {who} uses key {fp[:16]}...: it belongs to another training"
            )

    def start(self, header: Header, kind: str) -> None:
        """Begin a fresh checkpoint: drop any old ``kind`` records, then write ``header``."""
        self.drop(kind, 0)
        self.header = header
        atomic_write(self.path / HEADER, header.to_bytes())

    def read(self, name: str) -> Any:
        """A JSON file of this directory.

        Raises:
            ConfigError: unreadable or malformed (names the file).
        """
        where = self.path / name
        try:
            return json.loads(where.read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read checkpoint file {where}: {exc}") from None

    def write(self, name: str, obj: Any) -> None:
        """Write ``obj`` as JSON, atomically."""
        atomic_write(self.path / name, json.dumps(obj).encode())

    def write_secret(self, name: str, text: str) -> None:
        """Write a secret (a private key), atomically, readable by this user only."""
        atomic_write(self.path / name, text.encode())

    def indices(self, kind: str) -> list[int]:
        """The record numbers 0, 1, ... present without a gap (a later record after a gap
        cannot be used: the records before it are missing)."""
        have = set()
        for p in self.path.iterdir():
            m = _RECORD.match(p.name)
            if m and m.group("kind") == kind:
                have.add(int(m.group("index")))
        out: list[int] = []
        while len(out) in have:
            out.append(len(out))
        return out

    def present(self, kind: str) -> set[int]:
        """Every record number of ``kind`` on disk."""
        return {
            int(m.group("index"))
            for p in self.path.iterdir()
            if (m := _RECORD.match(p.name)) and m.group("kind") == kind
        }

    def drop(self, kind: str, keep: int) -> None:
        """Remove the ``kind`` records numbered ``keep`` and above (durably)."""
        self._remove([i for i in self.present(kind) if i >= keep], kind)

    def drop_below(self, kind: str, first: int) -> None:
        """Remove the ``kind`` records numbered below ``first`` (durably)."""
        self._remove([i for i in self.present(kind) if i < first], kind)

    def _remove(self, indices: list[int], kind: str) -> None:
        for i in indices:
            (self.path / record_name(kind, i)).unlink(missing_ok=True)
        if indices:
            sync_dir(self.path)


def record_name(kind: str, index: int) -> str:
    """The file name of record ``index`` of ``kind`` (``tree-000003.json``)."""
    return f"{kind}-{index:06d}.json"


def header_for(
    protocol: str,
    name: str,
    parties: Iterable[str],
    roles: Mapping[str, str],
    config: Mapping[str, Any],
    data: str,
) -> Header:
    """A :class:`Header` with the party list sorted and the config as a plain dict."""
    return Header(
        protocol, name, sorted(parties), dict(roles), json.loads(json.dumps(config)), data
    )


def agreed_steps(held: Mapping[str, int], limit: int, steps: str, parties: str, each: str) -> int:
    """How many steps (trees, rounds) every party resumes after: the fewest any party holds,
    at most ``limit``; -1 means a party keeps no checkpoint.

    Args:
        held: each party's completed steps (-1: no checkpoint directory).
        limit: the steps this run asks for (a run asking for fewer keeps only those).
        steps: what a step is, as the message says it ("hold trees", "completed rounds").
        parties: what the parties are ("party(ies)", "client(s)").
        each: one of them ("party", "client").

    Raises:
        ConfigError: some parties keep no checkpoint while others hold steps.
    """
    if max(held.values()) > 0 and min(held.values()) < 0:
        without = sorted(n for n, k in held.items() if k < 0)
        kept = {n: k for n, k in held.items() if k >= 0}
        raise ConfigError(
            f"{parties} {without} keep no checkpoint while others {steps} ({kept}); start "
            f"every {each} with a checkpoint directory to resume"
        )
    return min(max(0, min(held.values())), limit)


__all__ = [
    "CheckpointDir",
    "Header",
    "agreed_steps",
    "atomic_write",
    "fingerprint",
    "header_for",
    "key_fingerprint",
    "record_name",
    "sync_dir",
]
