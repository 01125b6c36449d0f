"""A client's steps of one round: train, upload, decrypt (its 1/k), apply.

``train``: run the app's train function on the held global model; the update of client i is
u_i = n_i·(w_i − w) (n_i its weight, e.g. its number of examples); encrypt and send
[n_i, Σu_i² per layer]. ``upload``: decrypt the summed statistics, giving N = Σn_i and the
per-layer σ for dACIQ; quantize x_i = u_i·k/N per layer (α_l = c(r)·σ_l, or the fixed α),
pack and encrypt. Σ_i x_i / k is then exactly FedAvg's update, up to the quantization step.
``decrypt``: decrypt slice i of the aggregate and seal it to every other client. ``apply``:
open the others' slices, unpack the lane sums, dequantize and add Σx/k to the global model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

from hefl.crypto import CipherVector, PrivateKey, PublicKey, plan_slots
from hefl.errors import ConfigError, KeyMismatchError, ProtocolError
from hefl.flower import _legacy
from hefl.flower._sealing import open_box, seal
from hefl.flower._state import (
    Session,
    load_round,
    pop_update,
    save_global,
    save_round,
    save_update,
)
from hefl.flower._state import global_arrays as held_arrays
from hefl.flower._wire import CONFIG_KEY, METRICS_KEY, content, field, step_record
from hefl.protocols.batchcrypt import work
from hefl.protocols.batchcrypt.config import BatchCryptConfig
from hefl.protocols.batchcrypt.layers import (
    daciq_alphas,
    dequantize_layers,
    layer_square_sums,
    quantize_layers,
)
from hefl.protocols.batchcrypt.quantize import new_rng

CallNext = Callable[[Message, Context], Message]


class ModSettings(Protocol):
    """What a round step needs of the client's mod (:class:`hefl.flower.BatchCryptMod`)."""

    cfg: BatchCryptConfig
    weight_key: str
    threads: int


def handle(
    mod: ModSettings,
    s: Session,
    msg: Message,
    context: Context,
    call_next: CallNext,
    step: ConfigRecord,
) -> RecordDict:
    """Run round step ``step["step"]`` for this client.

    Args:
        mod: the client's mod (its config, weight metric and decryption threads).
        s: the client's session.
        msg: the server's message; context: the client's Context.
        call_next: the app's own handler (its train function).
        step: the message's hefl step record.

    Returns:
        The reply's content.

    Raises:
        ConfigError: the app's update has NaN/inf values (names the node and layer), or a bad
            weight.
        ProtocolError / KeyMismatchError: the server sent something malformed or for another
            key.
    """
    name = str(step["step"])
    round_ = field(step, "round", int, "the server")
    pk, _sk = s.keys()
    theirs = field(step, "key_id", str, "the server")
    if theirs != pk.key_id.hex():
        raise KeyMismatchError(
            f"node {s.node}: the server runs key {theirs}, this client {pk.key_id.hex()}"
        )
    cfg = mod.cfg
    if name == "train":
        return _train(cfg, s, msg, context, call_next, round_, mod.weight_key)
    if name == "upload":
        return _upload(cfg, s, context, step, round_)
    if name == "decrypt":
        return _decrypt(s, context, step, round_, mod.threads)
    if name == "apply":
        return _apply(cfg, s, context, step, round_)
    raise ProtocolError(f"the server sent an unknown hefl step {name!r}")


def _reply(s: Session, name: str, round_: int, **fields: object) -> ConfigRecord:
    pk, _ = s.keys()
    return step_record(name, s.session, round_, key_id=pk.key_id.hex(), **fields)


def _train(
    cfg: BatchCryptConfig,
    s: Session,
    msg: Message,
    context: Context,
    call_next: CallNext,
    round_: int,
    weight_key: str,
) -> RecordDict:
    before = held_arrays(context)
    user_config = msg.content.config_records.get(CONFIG_KEY) or ConfigRecord()
    msg.content = _legacy.train_content(before, user_config)
    reply = call_next(msg, context)
    if reply.has_error():
        raise ProtocolError(f"node {s.node}: the app's train function failed: {reply.error.reason}")
    after, metrics = _legacy.trained(reply.content, before, weight_key, s.node)
    if after is None:
        raise ProtocolError(f"node {s.node}: the app's train function returned no arrays")
    weight = metrics.get(weight_key)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
        raise ConfigError(
            f"node {s.node}: the train reply's metric {weight_key!r} must be a positive "
            f"number (the client's weight), got {weight!r}"
        )
    n = max(1, round(float(weight)))  # an integer weight: it travels as a Paillier plaintext
    delta, layers = _delta(s.node, round_, before, after)
    u = n * delta
    _, sk = s.keys()
    stats, _ = work.encrypt_plain(sk, [n, *layer_square_sums(u, layers)], cfg.short_exponent)
    save_update(context, u)
    save_round(context, round=round_, layers=list(layers), count=len(u))
    step = _reply(s, "train", round_, layers=list(layers), stats=stats.to_bytes())
    return content(step, **{METRICS_KEY: metrics})


def _delta(
    node: int, round_: int, before: ArrayRecord, after: ArrayRecord
) -> tuple[np.ndarray, tuple[int, ...]]:
    """The flat float64 update after − before, one layer per array, checked finite."""
    if list(after.keys()) != list(before.keys()):
        raise ConfigError(
            f"node {node}: the trained model's arrays {list(after.keys())} are not the global "
            f"model's {list(before.keys())}"
        )
    parts = []
    for name in before:
        a, b = after[name].numpy(), before[name].numpy()
        if a.shape != b.shape:
            raise ConfigError(f"node {node}: layer {name!r} has shape {a.shape}, not {b.shape}")
        d = a.astype(np.float64).ravel() - b.astype(np.float64).ravel()
        bad = int(np.count_nonzero(~np.isfinite(d)))
        if bad:
            raise ConfigError(
                f"node {node}: layer {name!r} of the round-{round_} update has {bad} NaN or "
                "infinite value(s); refusing to aggregate it"
            )
        parts.append(d)
    if not parts or sum(len(p) for p in parts) == 0:
        raise ConfigError(f"node {node}: the model has no values to aggregate")
    return np.concatenate(parts), tuple(len(p) for p in parts)


def _decrypt_ints(
    pk: PublicKey, sk: PrivateKey, data: object, who: str, threads: int = 1
) -> list[int]:
    if not isinstance(data, bytes):
        raise ProtocolError(f"{who} sent no ciphertext bytes")
    return sk.decrypt(CipherVector.from_bytes(pk, data), threads=threads)


def _upload(
    cfg: BatchCryptConfig, s: Session, context: Context, step: ConfigRecord, round_: int
) -> RecordDict:
    pk, sk = s.keys()
    rec = load_round(context, round_)
    layers = tuple(int(v) for v in rec["layers"])  # type: ignore[union-attr]
    sums = _decrypt_ints(pk, sk, step.get("stats"), "the server")
    if len(sums) != len(layers) + 1 or sums[0] <= 0:
        raise ProtocolError(f"the server's summed statistics of round {round_} are malformed")
    k, total = len(s.roster), sums[0]
    scale = (k / total) ** 2  # statistics of u, the quantized values are x = u·k/N
    if cfg.clipping == "daciq":
        alphas = daciq_alphas([round(v * scale) for v in sums[1:]], layers, k, cfg.bits)
    else:
        alphas = np.full(len(layers), float(cfg.clipping))
    x = pop_update(context) * (k / total)
    q = quantize_layers(x, layers, alphas, cfg.bits, new_rng())
    layout = plan_slots(pk, cfg.bits, cfg.n_clients, layout=cfg.layout)
    cv, _ = work.encrypt_packed(sk, layout, q, cfg.short_exponent)
    save_round(context, total=float(total), alphas=[float(a) for a in alphas])
    return content(_reply(s, "upload", round_, ciphers=cv.to_bytes()))


def _encode(pk: PublicKey, ints: list[int]) -> bytes:
    """Signed plaintexts as fixed-width unsigned residues mod n."""
    w, n = (pk.n_bits + 7) // 8, int(pk.n)
    return b"".join([(v % n).to_bytes(w, "big") for v in ints])


def _decode(pk: PublicKey, data: bytes, count: int, who: str) -> list[int]:
    w = (pk.n_bits + 7) // 8
    if len(data) != count * w:
        raise ProtocolError(f"{who} sent {len(data)} bytes of plaintexts, expected {count * w}")
    out = [int.from_bytes(data[i : i + w], "big") for i in range(0, len(data), w)]
    if any(v >= pk.n for v in out):
        raise ProtocolError(f"{who} sent a plaintext outside [0, n)")
    return out


def _decrypt(
    s: Session, context: Context, step: ConfigRecord, round_: int, threads: int
) -> RecordDict:
    pk, sk = s.keys()
    load_round(context, round_)
    mine = _encode(pk, _decrypt_ints(pk, sk, step.get("ciphers"), "the server", threads))
    purpose = f"share/{round_}"
    boxes = [
        b"" if peer == s.node else seal(s.box, pub, s.session, purpose, s.node, peer, mine)
        for peer, pub in zip(s.roster, s.publics, strict=True)
    ]
    save_round(context, share=mine)
    return content(_reply(s, "decrypt", round_, boxes=boxes))


def _apply(
    cfg: BatchCryptConfig, s: Session, context: Context, step: ConfigRecord, round_: int
) -> RecordDict:
    pk, _ = s.keys()
    rec = load_round(context, round_)
    boxes = field(step, "boxes", list, "the server")
    bounds = [int(v) for v in field(step, "slices", list, "the server")]
    k = len(s.roster)
    if len(boxes) != k or len(bounds) != k + 1:
        raise ProtocolError(f"the server relayed {len(boxes)} shares for {k} clients")
    plaintexts: list[int] = []
    for i, (peer, pub) in enumerate(zip(s.roster, s.publics, strict=True)):
        if peer == s.node:
            data = rec["share"]
        else:
            data = open_box(s.box, pub, s.session, f"share/{round_}", peer, s.node, boxes[i])
        plaintexts.extend(_decode(pk, data, bounds[i + 1] - bounds[i], f"node {peer}"))  # type: ignore[arg-type]
    layers = tuple(int(v) for v in rec["layers"])  # type: ignore[union-attr]
    layout = plan_slots(pk, cfg.bits, cfg.n_clients, layout=cfg.layout)
    count = int(rec["count"])  # type: ignore[arg-type]
    if len(plaintexts) != layout.n_plaintexts(count):
        raise ProtocolError(
            f"the server relayed {len(plaintexts)} plaintexts of round {round_}, the update "
            f"needs {layout.n_plaintexts(count)}"
        )
    lanes = layout.unpack(plaintexts, count, n_summands=k)
    alphas = np.asarray(rec["alphas"], dtype=np.float64)
    delta = dequantize_layers(np.asarray(lanes), layers, alphas, cfg.bits) / k
    model = held_arrays(context)
    updated, at = {}, 0
    for name, arr in model.items():
        old = arr.numpy()
        step_ = delta[at : at + old.size].reshape(old.shape)
        at += old.size
        new = old.astype(np.float64) + step_
        updated[name] = Array(
            np.rint(new).astype(old.dtype) if old.dtype.kind in "iu" else new.astype(old.dtype)
        )
    save_global(context, ArrayRecord(updated))
    return content(_reply(s, "apply", round_))
