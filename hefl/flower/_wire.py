"""What hefl's Flower messages carry, shared by the strategy and the client mod.

Every hefl step travels as a Flower ``train`` message (so it reaches the ClientApp's train
function, where the client mod sits) whose content holds a ``ConfigRecord`` under
:data:`STEP_KEY` naming the step. Ciphertexts travel as hefl's fixed-width bytes
(:meth:`hefl.crypto.CipherVector.to_bytes`), client-to-client data as sealed boxes
(:mod:`hefl.flower._sealing`). A client that fails a step answers with a Flower ``Error``
whose reason starts with the hefl error class, so the server re-raises the same kind of error.
"""

from __future__ import annotations

from typing import Any

from flwr.app import ConfigRecord, Error, Message, RecordDict

from hefl.crypto import PublicKey
from hefl.errors import ConfigError, HeflError, KeyMismatchError, ProtocolError
from hefl.protocols.batchcrypt.config import BatchCryptConfig

STEP_KEY = "hefl.batchcrypt"  # the ConfigRecord naming the step of a hefl message
ARRAYS_KEY = "arrays"  # Flower's conventional key of a model's ArrayRecord
CONFIG_KEY = "config"  # Flower's conventional key of a train/evaluate ConfigRecord
METRICS_KEY = "metrics"  # Flower's conventional key of a reply's MetricRecord
STEPS = ("hello", "keygen", "key", "train", "upload", "decrypt", "apply")
ERROR_CODE = 4180  # Flower Error code of a hefl failure in a client mod
_ERRORS: dict[str, type[HeflError]] = {
    "ConfigError": ConfigError,
    "KeyMismatchError": KeyMismatchError,
    "ProtocolError": ProtocolError,
}


def check_config(cfg: BatchCryptConfig) -> BatchCryptConfig:
    """Check that ``cfg`` is usable inside Flower (packed Paillier, every client shares).

    Raises:
        ConfigError: ``cfg`` is not a BatchCryptConfig of mode ``"batchcrypt"``.
    """
    if not isinstance(cfg, BatchCryptConfig):
        raise ConfigError(f"hefl.flower needs a BatchCryptConfig, not {type(cfg).__name__}")
    if cfg.mode != "batchcrypt":
        raise ConfigError(f"hefl.flower runs mode 'batchcrypt' only, not {cfg.mode!r}")
    return cfg


def fingerprint(cfg: BatchCryptConfig) -> str:
    """The settings every client and the server must share, as one comparable string."""
    return (
        f"bits={cfg.bits};n_clients={cfg.n_clients};key_bits={cfg.key_bits};"
        f"clipping={cfg.clipping};layout={cfg.layout};short_exponent={cfg.short_exponent}"
    )


def fingerprint_diff(mine: str, theirs: str) -> str:
    """The settings in which two fingerprints differ, as ``name: mine vs theirs``."""
    a = dict(p.split("=", 1) for p in mine.split(";") if "=" in p)
    b = dict(p.split("=", 1) for p in theirs.split(";") if "=" in p)
    diff = [
        f"{k}={a.get(k)} vs {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
    ]
    return ", ".join(diff) or theirs


def step_record(step: str, session: str, round_: int, **fields: Any) -> ConfigRecord:
    """The ConfigRecord that names a hefl step (and carries its small fields)."""
    return ConfigRecord({"step": step, "session": session, "round": round_, **fields})


def step_of(msg: Message) -> ConfigRecord | None:
    """The hefl step record of ``msg``, or None for an ordinary Flower message."""
    if msg.has_error() or not msg.has_content():
        return None
    record = msg.content.config_records.get(STEP_KEY)
    return record if isinstance(record, ConfigRecord) else None


def reply_step(msg: Message, who: str) -> ConfigRecord:
    """The hefl step record of a reply.

    Raises:
        ProtocolError: ``msg`` carries no hefl step (names ``who`` sent it).
    """
    step = step_of(msg)
    if step is None:
        raise ProtocolError(f"{who} answered without a hefl step record")
    return step


def field(record: ConfigRecord, name: str, kind: type | tuple[type, ...], who: str) -> Any:
    """``record[name]``, checked to be of ``kind``.

    Raises:
        ProtocolError: the field is missing or of another type (names ``who`` sent it).
    """
    value = record.get(name)
    if value is None or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        raise ProtocolError(f"{who} sent no {name!r} field")
    if not isinstance(value, kind):
        raise ProtocolError(f"{who} sent a {type(value).__name__} as {name!r}")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def error_reply(msg: Message, exc: BaseException) -> Message:
    """A Flower Error reply whose reason keeps the hefl error class and its message."""
    kind = type(exc).__name__ if type(exc).__name__ in _ERRORS else "ProtocolError"
    return Message(Error(code=ERROR_CODE, reason=f"{kind}: {exc}"), reply_to=msg)


def raise_client_error(node: int, step: str, round_: int, reason: str) -> None:
    """Re-raise a client's failure at the server, as the hefl error class it reported.

    Raises:
        ConfigError / KeyMismatchError / ProtocolError: always.
    """
    kind, _, text = reason.partition(": ")
    cls = _ERRORS.get(kind, ProtocolError)
    text = text if kind in _ERRORS else reason
    raise cls(f"node {node} failed step {step!r} of round {round_}: {text}")


def public_key_bytes(pk: PublicKey) -> bytes:
    """The modulus n, big-endian (what the key holder announces)."""
    return int(pk.n).to_bytes((pk.n_bits + 7) // 8, "big")


def public_key_from(data: bytes, cfg: BatchCryptConfig, who: str) -> PublicKey:
    """Parse an announced modulus and check its size.

    Raises:
        KeyMismatchError: the modulus is not of ``cfg.key_bits`` bits.
    """
    pk = PublicKey(int.from_bytes(data, "big"))
    if pk.n_bits != cfg.key_bits:
        raise KeyMismatchError(f"{who} announced a {pk.n_bits}-bit key, expected {cfg.key_bits}")
    return pk


def content(step: ConfigRecord, **records: Any) -> RecordDict:
    """A message content: the step record and any other records."""
    return RecordDict({STEP_KEY: step, **records})
