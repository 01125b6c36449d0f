"""Checkpoint and resume of federated training (FedAvg / FedSGD) with BatchCrypt aggregation.

Every client writes, after every round, a record into its own directory
(``<checkpoint_dir>/<client name>``, see :mod:`hefl._checkpoint`): the global model's weights
after that round, the state of its minibatch sampler, and the test accuracy and loss so far.
It keeps the last two rounds' records: clients finish a round within one round of each other
(a client cannot complete round t + 1 before every client completed round t, whose sum it
needs), so the round every client completed is always among them. No key is kept: the weights
are plaintext at every client, and each resumed session agrees on a fresh Paillier key as any
session does. The aggregator keeps nothing; a resumed session's rounds are numbered from 0 on
the wire and the clients map them to their global round.

At start, before the keys, every client sends every other client the round it completed last
and a digest of the weights after it and after the round before (:class:`ResumeRounds`); all
continue after the fewest rounds any client completed, and check that every client holds the
same weights there. A client that keeps no checkpoint has completed none, so a federation in
which one client has rounds and another keeps no checkpoint is refused rather than silently
restarted.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self

import numpy as np

from hefl import Party
from hefl._checkpoint import (
    CheckpointDir,
    Header,
    agreed_steps,
    fingerprint,
    header_for,
    record_name,
)
from hefl.errors import ConfigError
from hefl.messages import Fields, Message, broadcast, gather
from hefl.protocols.batchcrypt.config import BatchCryptConfig
from hefl.protocols.batchcrypt.federation import RoundTiming, federation_clients

KIND = "round"
#: configuration fields a resumed training may change: more (or fewer) rounds continue it
LOOSE = ("spec.rounds",)
_DIGEST = 8


class FedTrainer(Protocol):
    """What a checkpoint reads and restores of a client's trainer
    (:class:`hefl.protocols.batchcrypt.FedTrainer`)."""

    X: np.ndarray
    y: np.ndarray
    model: Any  # an MLP: get_flat() / set_flat(weights)
    rng: Any  # the minibatch sampler (a numpy Generator: experiment set-up, not secrets)
    accuracy: list[float]
    loss: list[float]
    layer_sizes: Any

    @property
    def rounds(self) -> int: ...

    def update(self, t: int) -> np.ndarray | None: ...

    def receive(self, t: int, total: np.ndarray, n_clients: int) -> None: ...

    def result(self) -> Any: ...

    def record_timings(self, timings: list[RoundTiming]) -> None: ...


@dataclass(frozen=True)
class ResumeRounds(Message):
    """A client's checkpoint: the rounds it completed (-1: it keeps no checkpoint) and
    8-byte digests of the weights after that round and after the one before (empty when
    it has no such record)."""

    TAG: ClassVar[str] = "bc/resume"
    rounds: int
    latest: bytes
    previous: bytes

    @classmethod
    def parse(cls, f: Fields) -> Self:
        rounds = f.integer("rounds", min=-1)
        latest = f.raw("latest", size=_DIGEST if rounds > 0 else 0)
        previous = f.raw("previous")
        if len(previous) not in (0, _DIGEST):
            raise f.fail("previous", f"must be 0 or {_DIGEST} bytes, got {len(previous)}")
        return cls(rounds, latest, previous)

    def digest_at(self, t: int) -> bytes | None:
        """The digest of the weights after round ``t`` if this client holds them."""
        if t == self.rounds:
            return self.latest
        if t == self.rounds - 1 and self.previous:
            return self.previous
        return None


class RoundCheckpoint:
    """One client's checkpoint (without a directory it keeps nothing, but still takes part in
    the agreement, having completed no round).

    Args:
        directory: the checkpoint root (None: no checkpoint).
        resume: continue a checkpoint found there (else one found there is refused).
        header: what this training is.

    Raises:
        ConfigError: a checkpoint of another training (names what differs), one found while
            ``resume`` is False, or an unreadable record.
    """

    def __init__(self, directory: str | os.PathLike[str] | None, resume: bool, header: Header):
        self.header = header
        self.dir = CheckpointDir(directory, header.party, resume) if directory else None
        self.records: dict[int, dict[str, Any]] = {}
        if self.dir is not None:
            if self.dir.header is not None:
                self.dir.check(header, LOOSE)
                for t in sorted(self.dir.present(KIND))[-2:]:
                    self.records[t] = self.dir.read(record_name(KIND, t))
            else:
                self.dir.start(header, KIND)

    @classmethod
    def for_client(
        cls,
        directory: str | os.PathLike[str] | None,
        resume: bool,
        party: Party,
        cfg: BatchCryptConfig,
        spec: Any,
        trainer: FedTrainer,
    ) -> RoundCheckpoint:
        """The checkpoint of the client ``party`` training with ``trainer`` (``spec``: the
        :class:`~hefl.protocols.batchcrypt.TrainSpec`)."""
        config = {f"batchcrypt.{k}": v for k, v in dataclasses.asdict(cfg).items()}
        config.update({f"spec.{k}": v for k, v in dataclasses.asdict(spec).items()})
        header = header_for(
            "batchcrypt",
            party.name,
            [party.name, *party.peers],
            {"aggregator": cfg.aggregator},
            config,
            fingerprint(trainer.X, trainer.y),
        )
        return cls(directory, resume, header)

    def _held(self) -> int:
        if self.dir is None:
            return -1
        return max(self.records, default=0)

    def _message(self) -> ResumeRounds:
        held = self._held()
        latest = _weights_digest(self.records[held]) if held > 0 else b""
        prev = self.records.get(held - 1)
        return ResumeRounds(held, latest, _weights_digest(prev) if prev and held > 1 else b"")

    async def agree(self, party: Party, cfg: BatchCryptConfig, rounds: int) -> int:
        """Agree with the other clients on the round to continue after.

        Args:
            party: this client.
            cfg: the federation's configuration.
            rounds: the rounds this training asks for (a checkpoint beyond is cut back).

        Returns:
            The rounds every client completed (training continues with the next).

        Raises:
            ConfigError: clients whose weights differ at that round, or a client with rounds
                while another keeps no checkpoint.
        """
        others = [c for c in federation_clients(party, cfg) if c != party.name]
        mine = self._message()
        theirs: dict[str, ResumeRounds] = {}
        if others:
            await broadcast(party, mine, peers=others)
            theirs = await gather(party, ResumeRounds, peers=others)
        held = {party.name: mine.rounds, **{n: m.rounds for n, m in theirs.items()}}
        keep = agreed_steps(held, rounds, "completed rounds", "client(s)", "client")
        want = mine.digest_at(keep)
        if keep > 0 and want is None:
            raise ConfigError(
                f"client {party.name!r} keeps the model after rounds {sorted(self.records)} "
                f"only, so it cannot continue after round {keep}"
            )
        if keep > 0:
            for name, msg in theirs.items():
                if msg.digest_at(keep) != want:
                    raise ConfigError(
                        f"clients {party.name!r} and {name!r} do not hold the same model after "
                        f"round {keep} (rounds completed: {held}); the checkpoints come from "
                        "different trainings"
                    )
        return keep

    def restore(self, trainer: FedTrainer, keep: int) -> None:
        """Put the state after round ``keep`` into ``trainer``; drop later records.

        Raises:
            ConfigError: a malformed record (names the file).
        """
        if self.dir is None:
            return
        self.dir.drop(KIND, keep + 1)
        self.records = {t: r for t, r in self.records.items() if t <= keep}
        if keep == 0:
            return
        rec = self.records[keep]
        try:
            weights = _decode(rec["weights"])
            trainer.model.set_flat(weights)
            trainer.rng.bit_generator.state = rec["rng"]
            trainer.accuracy = [float(v) for v in rec["accuracy"]]
            trainer.loss = [float(v) for v in rec["loss"]]
        except (KeyError, TypeError, ValueError) as exc:
            where = self.dir.path / record_name(KIND, keep)
            raise ConfigError(f"malformed checkpoint record {where}: {exc!r}") from None

    def save(self, completed: int, trainer: FedTrainer) -> None:
        """Record the state after round ``completed`` (1-based count), durably, and drop the
        record before the previous one.

        It runs on the event loop between two rounds (a round's result reaches the trainer
        through a plain method call): the record is a few kB to a few MB and must be on disk
        before the next round's first message leaves, so that clients never drift more than
        one round apart in what they hold.
        """
        if self.dir is None:
            return
        record = {
            "round": completed,
            "weights": _encode(trainer.model.get_flat()),
            "rng": trainer.rng.bit_generator.state,
            "accuracy": trainer.accuracy,
            "loss": trainer.loss,
        }
        self.dir.write(record_name(KIND, completed), record)
        self.records[completed] = record
        for old in [t for t in self.records if t < completed - 1]:
            del self.records[old]
        self.dir.drop_below(KIND, completed - 1)


class ResumedSource:
    """A :class:`FedTrainer` seen from a resumed session: the session's round ``t`` is the
    training's round ``start + t``, and every completed round is saved."""

    def __init__(self, trainer: FedTrainer, ckpt: RoundCheckpoint, start: int) -> None:
        self.trainer, self.ckpt, self.start = trainer, ckpt, start
        self.layer_sizes = trainer.layer_sizes

    @property
    def rounds(self) -> int:
        """The rounds left after the checkpoint."""
        return max(0, self.trainer.rounds - self.start)

    def update(self, t: int) -> np.ndarray | None:
        return self.trainer.update(self.start + t)

    def receive(self, t: int, total: np.ndarray, n_clients: int) -> None:
        self.trainer.receive(self.start + t, total, n_clients)
        self.ckpt.save(self.start + t + 1, self.trainer)

    def result(self) -> Any:
        return self.trainer.result()

    def record_timings(self, timings: list[RoundTiming]) -> None:
        self.trainer.record_timings(timings)


async def resumed(
    party: Party,
    cfg: BatchCryptConfig,
    spec: Any,
    trainer: FedTrainer,
    directory: str | os.PathLike[str] | None,
    resume: bool,
) -> ResumedSource:
    """The round source of a client role: ``trainer`` continued from the last round every
    client completed, saving every round into ``<directory>/<party name>``.

    Raises:
        ConfigError: as :class:`RoundCheckpoint` and :meth:`RoundCheckpoint.agree`.
    """
    ckpt = RoundCheckpoint.for_client(directory, resume, party, cfg, spec, trainer)
    start = await ckpt.agree(party, cfg, spec.rounds)
    ckpt.restore(trainer, start)
    return ResumedSource(trainer, ckpt, start)


def _encode(a: np.ndarray) -> dict[str, Any]:
    arr = np.ascontiguousarray(a, dtype=np.float64)
    return {"shape": list(arr.shape), "data": base64.b64encode(arr.tobytes()).decode()}


def _decode(d: dict[str, Any]) -> np.ndarray:
    flat = np.frombuffer(base64.b64decode(d["data"]), dtype=np.float64)
    return flat.reshape([int(s) for s in d["shape"]]).copy()


def _weights_digest(record: dict[str, Any]) -> bytes:
    return hashlib.sha256(record["weights"]["data"].encode()).digest()[:_DIGEST]


__all__ = ["ResumeRounds", "ResumedSource", "RoundCheckpoint", "resumed"]
