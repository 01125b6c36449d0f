"""The server side: a FedAvg strategy whose server only relays and adds ciphertexts.

:class:`BatchCryptFedAvg` has the ``start(grid, initial_arrays, num_rounds, ...)`` call of
Flower's message-API strategies and returns Flower's ``Result``, but it does not subclass
``flwr.serverapp.strategy.Strategy``: that loop hands the aggregate to the server every round,
which is exactly what BatchCrypt prevents. Here the server sends the initial model once, then
only ever holds the Paillier public key, ciphertexts, sealed boxes and the clients' metrics;
the model lives on the clients (``Result.arrays`` stays empty).

A round needs every client of the session: one that does not answer a step within
``timeout`` (or answers with an error) fails the round, and ``start`` raises naming it.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from hefl.crypto import CipherVector, PublicKey
from hefl.errors import ConfigError, KeyMismatchError, ProtocolError
from hefl.flower._wire import (
    ARRAYS_KEY,
    CONFIG_KEY,
    check_config,
    content,
    field,
    fingerprint,
    fingerprint_diff,
    public_key_from,
    raise_client_error,
    reply_step,
    step_of,
    step_record,
)
from hefl.protocols.batchcrypt.config import BatchCryptConfig
from hefl.protocols.batchcrypt.federation import download_slices


class BatchCryptFedAvg:
    """Federated averaging with BatchCrypt's packed-Paillier aggregation, for Flower.

    Args:
        cfg: the federation's BatchCryptConfig (``n_clients`` clients take part in every
            round); every client's mod must have the same settings.
        join_timeout: seconds to wait for ``cfg.n_clients`` nodes to connect.
        weighted_by_key: the metric weighting the clients' train and evaluate metrics.
        fraction_evaluate: 0.0 skips the evaluate messages (an app without an
            ``@app.evaluate()`` function); otherwise every client evaluates each round.

    Attributes:
        public_key: the session's Paillier public key (None before :meth:`start`).
        nodes: the session's client node ids, in roster order.

    Raises:
        ConfigError: ``cfg`` is not a BatchCryptConfig of mode ``"batchcrypt"``, or a bad
            timeout.
    """

    def __init__(
        self,
        cfg: BatchCryptConfig,
        *,
        join_timeout: float = 60.0,
        weighted_by_key: str = "num-examples",
        fraction_evaluate: float = 1.0,
    ) -> None:
        self.cfg = check_config(cfg)
        if isinstance(join_timeout, bool) or not isinstance(join_timeout, int | float):
            raise ConfigError(f"join_timeout must be a number of seconds, not {join_timeout!r}")
        self.join_timeout = float(join_timeout)
        self.weighted_by_key = weighted_by_key
        self.fraction_evaluate = float(fraction_evaluate)
        self.public_key: PublicKey | None = None
        self.nodes: tuple[int, ...] = ()
        self.session = ""
        self._timeout = 3600.0

    # -- the loop --------------------------------------------------------------------------
    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600.0,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
    ) -> Result:
        """Set up the session, then run ``num_rounds`` rounds of train + evaluate.

        Args:
            grid: the ServerApp's Grid.
            initial_arrays: the initial model (sent to the clients once, in the clear).
            num_rounds: rounds of training.
            timeout: seconds to wait for the replies of each step.
            train_config, evaluate_config: sent to the clients' train / evaluate functions.

        Returns:
            Flower's Result with the aggregated train and evaluate metrics per round; its
            ``arrays`` stay empty (the server never has the model).

        Raises:
            ConfigError: fewer than ``cfg.n_clients`` nodes joined, a client's config differs
                (named), or a client's update has NaN/inf values (node and layer named).
            KeyMismatchError: a client runs another key (named).
            ProtocolError: a client missed a step or sent something malformed (named).
        """
        if isinstance(num_rounds, bool) or not isinstance(num_rounds, int) or num_rounds < 0:
            raise ConfigError(f"num_rounds must be an integer >= 0, not {num_rounds!r}")
        self._timeout = float(timeout)
        self.nodes = self._wait_for_nodes(grid)
        self.session = secrets.token_hex(8)
        self._set_up(grid, initial_arrays)
        result = Result()
        for t in range(1, num_rounds + 1):
            metrics = self.run_round(grid, t, train_config or ConfigRecord())
            if metrics is not None:
                result.train_metrics_clientapp[t] = metrics
            evaluated = self.evaluate(grid, t, evaluate_config or ConfigRecord())
            if evaluated is not None:
                result.evaluate_metrics_clientapp[t] = evaluated
        return result

    def _wait_for_nodes(self, grid: Grid) -> tuple[int, ...]:
        want, deadline = self.cfg.n_clients, time.monotonic() + self.join_timeout
        while True:
            nodes = sorted(int(n) for n in grid.get_node_ids())
            if len(nodes) >= want:
                return tuple(nodes[:want])
            if time.monotonic() >= deadline:
                raise ConfigError(
                    f"the strategy is configured for {want} clients (BatchCryptConfig."
                    f"n_clients) but only {len(nodes)} joined within {self.join_timeout:g} s"
                )
            time.sleep(0.2)

    # -- messaging -------------------------------------------------------------------------
    def _exchange(
        self, grid: Grid, name: str, round_: int, contents: dict[int, RecordDict]
    ) -> dict[int, Message]:
        """Send one step to some nodes and return every reply, checked.

        Raises:
            ProtocolError: a node did not answer in time, answered another step or session.
            ConfigError / KeyMismatchError: a node reported that error (re-raised).
        """
        messages = [
            Message(c, dst_node_id=n, message_type="train", group_id=str(round_))
            for n, c in contents.items()
        ]
        replies = {
            int(m.metadata.src_node_id): m
            for m in grid.send_and_receive(messages, timeout=self._timeout)
        }
        missing = [n for n in contents if n not in replies]
        if missing:
            raise ProtocolError(
                f"node(s) {missing} did not answer step {name!r} of round {round_} within "
                f"{self._timeout:g} s; BatchCrypt needs every client of the session, so the "
                "round fails"
            )
        for n in contents:
            reply = replies[n]
            if reply.has_error():
                raise_client_error(n, name, round_, str(reply.error.reason))
            step = step_of(reply)
            if step is None or step.get("step") != name or step.get("session") != self.session:
                raise ProtocolError(f"node {n} answered step {name!r} of round {round_} wrongly")
            if round_ > 0 and step.get("key_id") != self._pk().key_id.hex():
                raise KeyMismatchError(
                    f"node {n} answered step {name!r} of round {round_} under key "
                    f"{step.get('key_id')!s}, not the session's {self._pk().key_id.hex()}"
                )
        return replies

    def _to_all(self, step: ConfigRecord, **records: Any) -> dict[int, RecordDict]:
        return {n: content(step, **records) for n in self.nodes}

    # -- set-up ----------------------------------------------------------------------------
    def _set_up(self, grid: Grid, initial_arrays: ArrayRecord) -> None:
        """Hello (configs, X25519 keys), keygen at the first node, the sealed key to the rest."""
        mine = fingerprint(self.cfg)
        hello = step_record("hello", self.session, 0, fingerprint=mine)
        replies = self._exchange(
            grid, "hello", 0, self._to_all(hello, **{ARRAYS_KEY: initial_arrays})
        )
        publics = []
        for n in self.nodes:
            step = reply_step(replies[n], f"node {n}")
            theirs = field(step, "fingerprint", str, f"node {n}")
            if theirs != mine:
                raise ConfigError(
                    f"node {n} runs another hefl config than the server: "
                    f"{fingerprint_diff(mine, theirs)}"
                )
            publics.append(field(step, "public", bytes, f"node {n}"))
        roster = {"roster": list(self.nodes), "publics": publics}
        holder = self.nodes[0]
        keygen = step_record("keygen", self.session, 0, **roster)
        answer = self._exchange(grid, "keygen", 0, {holder: content(keygen)})[holder]
        step = reply_step(answer, f"node {holder}")
        pk = public_key_from(field(step, "n", bytes, f"node {holder}"), self.cfg, f"node {holder}")
        boxes = field(step, "boxes", list, f"node {holder}")
        if len(boxes) != len(self.nodes):
            raise ProtocolError(
                f"node {holder} sealed {len(boxes)} keys for {len(self.nodes)} nodes"
            )
        others = {
            n: content(step_record("key", self.session, 0, n=step["n"], box=boxes[i], **roster))
            for i, n in enumerate(self.nodes)
            if n != holder
        }
        for n, reply in self._exchange(grid, "key", 0, others).items():
            got = reply_step(reply, f"node {n}").get("key_id")
            if got != pk.key_id.hex():
                raise KeyMismatchError(
                    f"node {n} holds key {got!s}, not the session's {pk.key_id.hex()}"
                )
        self.public_key = pk

    # -- one round -------------------------------------------------------------------------
    def _pk(self) -> PublicKey:
        if self.public_key is None:
            raise ProtocolError("the session has no public key; call start()")
        return self.public_key

    def _step(self, name: str, round_: int, **fields: Any) -> ConfigRecord:
        return step_record(name, self.session, round_, key_id=self._pk().key_id.hex(), **fields)

    def _sum(self, replies: dict[int, Message], name: str, key: str) -> CipherVector:
        """Add the nodes' ciphertexts of field ``key``; all must have the same length."""
        total: CipherVector | None = None
        for n in self.nodes:
            step = reply_step(replies[n], f"node {n}")
            cv = CipherVector.from_bytes(self._pk(), field(step, key, bytes, f"node {n}"))
            if total is not None and len(cv) != len(total):
                raise ProtocolError(
                    f"node {n} sent {len(cv)} ciphertexts in step {name!r}, node "
                    f"{self.nodes[0]} {len(total)}"
                )
            total = cv if total is None else total + cv
        assert total is not None
        return total

    def run_round(self, grid: Grid, round_: int, config: ConfigRecord) -> MetricRecord | None:
        """One round: train, upload, decrypt, apply (see :mod:`hefl.flower._round`).

        Returns:
            The clients' train metrics averaged with ``weighted_by_key`` (None without it).

        Raises:
            ConfigError / KeyMismatchError / ProtocolError: as :meth:`start`.
        """
        config = _with_round(config, round_)
        replies = self._exchange(
            grid, "train", round_, self._to_all(self._step("train", round_), **{CONFIG_KEY: config})
        )
        layers = {
            n: tuple(field(reply_step(r, f"node {n}"), "layers", list, f"node {n}"))
            for n, r in replies.items()
        }  # type: ignore[arg-type]
        odd = [n for n in self.nodes if layers[n] != layers[self.nodes[0]]]
        if odd:
            raise ProtocolError(
                f"round {round_}: node(s) {odd} train a model with other layer sizes than "
                f"node {self.nodes[0]}"
            )
        metrics = self._train_metrics(replies)
        stats = self._sum(replies, "train", "stats").to_bytes()
        uploads = self._exchange(
            grid, "upload", round_, self._to_all(self._step("upload", round_, stats=stats))
        )
        total = self._sum(uploads, "upload", "ciphers")
        parts = download_slices(len(total), len(self.nodes), True)
        contents = {
            n: content(self._step("decrypt", round_, ciphers=total[lo:hi].to_bytes()))
            for n, (lo, hi) in zip(self.nodes, parts, strict=True)
        }
        shares = self._exchange(grid, "decrypt", round_, contents)
        self._relay(grid, round_, shares, [0, *(hi for _, hi in parts)])
        return metrics

    def _relay(
        self, grid: Grid, round_: int, shares: dict[int, Message], bounds: list[int]
    ) -> None:
        """Hand each client the sealed slices the others addressed to it."""
        k = len(self.nodes)
        boxes: dict[int, list[Any]] = {}
        for n in self.nodes:
            got = field(reply_step(shares[n], f"node {n}"), "boxes", list, f"node {n}")
            if len(got) != k:
                raise ProtocolError(f"node {n} sealed {len(got)} shares for {k} clients")
            boxes[n] = got
        contents = {
            n: content(
                self._step("apply", round_, slices=bounds, boxes=[boxes[m][j] for m in self.nodes])
            )
            for j, n in enumerate(self.nodes)
        }
        self._exchange(grid, "apply", round_, contents)

    def _train_metrics(self, replies: dict[int, Message]) -> MetricRecord | None:
        records = [r.content for r in replies.values()]
        if not all(self.weighted_by_key in m for rd in records for m in rd.metric_records.values()):
            return None
        if not all(rd.metric_records for rd in records):
            return None
        return aggregate_metricrecords(records, self.weighted_by_key)

    def evaluate(self, grid: Grid, round_: int, config: ConfigRecord) -> MetricRecord | None:
        """Ask every client to evaluate the global model it holds; average the metrics.

        Returns:
            The metrics averaged with ``weighted_by_key``, or None if no client reported any.

        Raises:
            ProtocolError: a client's evaluation failed (named).
        """
        if self.fraction_evaluate <= 0:
            return None
        config = _with_round(config, round_)
        messages = [
            Message(
                RecordDict({CONFIG_KEY: config}),
                dst_node_id=n,
                message_type="evaluate",
                group_id=str(round_),
            )
            for n in self.nodes
        ]
        replies = list(grid.send_and_receive(messages, timeout=self._timeout))
        for r in replies:
            if r.has_error():
                raise ProtocolError(
                    f"node {r.metadata.src_node_id} failed to evaluate round {round_}: "
                    f"{r.error.reason}"
                )
        good = [r for r in replies if r.content.metric_records]
        if not good:
            return None
        return self._train_metrics({int(r.metadata.src_node_id): r for r in good})


def _with_round(config: ConfigRecord, round_: int) -> ConfigRecord:
    """A copy of ``config`` with ``"server-round"`` set, as Flower's strategies send it."""
    out = ConfigRecord(dict(config))
    out["server-round"] = round_
    return out
