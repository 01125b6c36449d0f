"""The end-to-end runs behind ``hefl demo`` and ``hefl party``, on the bundled UCI Adult data.

Each function returns a JSON-friendly report; :func:`format_report` turns one into the
one-screen summary the CLI prints. The CLI only parses flags and maps errors.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from hefl._progress import RoundProgress, TreeProgress
from hefl.crypto import _native as native
from hefl.data import ADULT_ACTIVE_COLUMNS, Dataset, adult_vertical_parts, load_adult

if TYPE_CHECKING:
    from hefl._party import Party


def subsample(data: Dataset, rows: int, seed: int = 0) -> Dataset:
    """The first ``rows`` rows of a fixed shuffle of ``data`` (all of it when rows is 0)."""
    if rows <= 0 or rows >= len(data.y):
        return data
    keep = np.sort(np.random.default_rng(seed).permutation(len(data.y))[:rows])
    return Dataset(X=data.X[keep], y=data.y[keep], columns=data.columns, categories=data.categories)


def party_table(statistics: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per party: bytes and messages each way, wall, busy and idle seconds, idle share."""
    out = {}
    for name, s in statistics.items():
        wall = float(s.get("wall_seconds", 0.0))
        idle = float(s.get("idle_seconds", 0.0))
        out[name] = {
            "bytes_sent": int(s.get("bytes_sent", 0)),
            "bytes_received": int(s.get("bytes_received", 0)),
            "messages_sent": int(s.get("messages_sent", 0)),
            "messages_received": int(s.get("messages_received", 0)),
            "wall_seconds": wall,
            "busy_seconds": float(s.get("busy_seconds", 0.0)),
            "idle_seconds": idle,
            "idle_share": idle / wall if wall else 0.0,
        }
    return out


#: the Adult column each objective's demo predicts (the active party's, removed from its
#: features): income (binary), age (regression; for reg:logistic scaled from 17..90 into
#: [0, 1]) and marital status in 3 classes (never married, married, previously married)
DEMO_TARGETS = {
    "binary:logistic": "income",
    "reg:squarederror": "age",
    "reg:logistic": "age",
    "multi:softprob": "marital_status",
}


#: Adult's marital status categories -> the demo's 3 classes
MARITAL_CLASSES = {
    "Never-married": 0,
    "Married-AF-spouse": 1,
    "Married-civ-spouse": 1,
    "Married-spouse-absent": 1,
    "Divorced": 2,
    "Separated": 2,
    "Widowed": 2,
}


def demo_num_class(objective: str) -> int:
    """num_class of the demo's task for ``objective`` (0 unless multi-class)."""
    return 3 if objective == "multi:softprob" else 0


def adult_task(data: Dataset, objective: str, n_parties: int) -> tuple[list[np.ndarray], Any]:
    """The demo's feature blocks and labels of ``objective`` (see :data:`DEMO_TARGETS`)."""
    parts = adult_vertical_parts(data, n_parties)
    target = DEMO_TARGETS.get(objective, "income")
    if target == "income":
        return parts, data.y
    col = list(ADULT_ACTIVE_COLUMNS).index(target)
    y = parts[0][:, col]
    parts[0] = np.delete(parts[0], col, axis=1)
    if target == "marital_status":
        names = data.categories[target]
        return parts, np.array([MARITAL_CLASSES[names[int(v)]] for v in y], dtype=np.float64)
    return parts, (y - 17.0) / 73.0 if objective == "reg:logistic" else y


def demo_scores(objective: str, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """The demo's test metrics of ``objective``'s predictions."""
    from hefl.protocols.vf2boost.metrics import evaluate

    if objective == "binary:logistic":
        return {"test_auc": evaluate("auc", y, pred), "test_logloss": evaluate("logloss", y, pred)}
    if objective == "multi:softprob":
        return {"test_accuracy": 1.0 - evaluate("merror", y, pred)}
    return {"test_rmse": evaluate("rmse", y, pred)}


def _run_mode(processes: bool) -> tuple[dict[str, Any], str]:
    """The ``fit``/``train``/``predict`` keywords of a run mode, and its description."""
    if processes:
        return {"transport": "zmq", "processes": True}, "one OS process per party over ZeroMQ"
    return {"transport": "inproc"}, "one process (inproc)"


def run_vf2boost(
    cfg: Any,
    *,
    parties: int = 2,
    rows: int = 0,
    processes: bool = True,
    progress: bool = False,
    timeout: float | None = None,
) -> tuple[dict[str, Any], Any]:
    """Train VF2Boost (``cfg``, a :class:`VF2BoostConfig`) on Adult's official train split,
    predict the test split through the parties, and check the trees against the plaintext
    reference.

    Returns:
        (report, trace): the JSON-friendly report and the federation's :class:`hefl.Trace`.
    """
    from hefl.protocols.vf2boost import fit, plaintext_reference, predict

    train = subsample(load_adult("train"), rows)
    test = load_adult("test")
    X_parts, y = adult_task(train, cfg.objective, parties)
    T_parts, y_test = adult_task(test, cfg.objective, parties)
    mode, described = _run_mode(processes)
    bar = TreeProgress(cfg.n_trees, enabled=progress)
    bar.start("key generation, binning, first tree (encrypting g and h)")
    result = fit(X_parts, y, cfg, progress=bar, timeout=timeout, **mode)
    t0 = time.perf_counter()
    pred = predict(T_parts, result.model, **mode)
    predict_seconds = time.perf_counter() - t0
    reference = plaintext_reference(X_parts, y, cfg)
    report = {
        "protocol": "vf2boost",
        "mode": described,
        "dataset": f"UCI Adult, {len(y)} training rows, {len(y_test)} test rows",
        "objective": cfg.objective,
        "target": DEMO_TARGETS.get(cfg.objective, "income"),
        "parties": parties,
        "trees": cfg.n_trees,
        "key_bits": cfg.key_bits,
        "obfuscation": cfg.obfuscation,
        "native_kernel": native.AVAILABLE,
        "ifma": native.IFMA,
        **demo_scores(cfg.objective, y_test, pred),
        "identical_to_plaintext_reference": result.model.resolved_trees()
        == reference.resolved_trees(),
        "seconds": result.seconds,
        "seconds_per_tree": float(np.mean(result.tree_seconds)),
        "predict_seconds": predict_seconds,
        "optimistic_hit_rate": result.hit_rate,
        "party_statistics": party_table(result.statistics),
    }
    return report, result.trace


def run_batchcrypt(
    cfg: Any,
    *,
    rounds: int = 10,
    model: str = "logreg",
    processes: bool = True,
    progress: bool = False,
) -> tuple[dict[str, Any], Any]:
    """Train a model on Adult split among ``cfg.n_clients`` clients with BatchCrypt
    aggregation (``cfg``, a :class:`BatchCryptConfig`), and the same rounds with plaintext
    FedAvg (same data, seeds and batches) for comparison.

    Returns:
        (report, trace): the JSON-friendly report and the federation's :class:`hefl.Trace`.
    """
    from hefl.protocols.batchcrypt import train

    mode, described = _run_mode(processes)
    bar = RoundProgress(rounds, enabled=progress)
    bar.start("starting parties, key generation and exchange, first round")
    result = train(cfg, model=model, dataset="adult", rounds=rounds, progress=bar, **mode)
    plain = train(cfg.with_(mode="plain"), model=model, dataset="adult", rounds=rounds)
    summary = result.summary()
    report = {
        "protocol": "batchcrypt",
        "mode": described,
        "dataset": "UCI Adult (official split), rows dealt out among the clients",
        "model": model,
        "clients": cfg.n_clients,
        "rounds": rounds,
        "quant_bits": cfg.bits,
        "key_bits": cfg.key_bits,
        "test_accuracy": result.final_accuracy,
        "plaintext_fedavg_accuracy": plain.final_accuracy,
        "accuracy_gap_points": 100 * (plain.final_accuracy - result.final_accuracy),
        "seconds": result.seconds,
        "mean_round_seconds": summary["mean_round_seconds"],
        "bytes_on_wire": result.bytes_on_wire,
        "aggregator_received": sorted(set(result.aggregator_received)),
        "party_statistics": party_table(result.statistics),
    }
    return report, result.trace


# --------------------------------------------------------------------- one party (multi-host)


def vf2boost_party_role(
    names: list[str], name: str, cfg: Any, rows: int = 0, keypair: Any = None
) -> Any:
    """The role of party ``name`` in a multi-host VF2Boost run on Adult: train, then predict
    the test split through the parties. ``names[0]`` is the active party."""
    index = names.index(name)
    return functools.partial(
        _vf2boost_party, names=names, index=index, cfg=cfg, rows=rows, keypair=keypair
    )


async def _vf2boost_party(
    party: Party,
    names: list[str],
    index: int,
    cfg: Any,
    rows: int,
    keypair: Any,
    checkpoint_dir: str | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    from hefl.protocols.vf2boost import active_party, passive_party, predict_active, predict_passive

    # parsing the data takes seconds: off the event loop, which keeps the heartbeats going
    train, test = await asyncio.to_thread(_adult_splits, rows)
    X_parts, y = adult_task(train, cfg.objective, len(names))
    T_parts, y_test = adult_task(test, cfg.objective, len(names))
    X, T = X_parts[index], T_parts[index]
    saving = {"checkpoint_dir": checkpoint_dir, "resume": resume}
    if index == 0:
        out = await active_party(party, X, y, cfg, passives=names[1:], keypair=keypair, **saving)
        pred = await predict_active(party, T, out["model"], passives=names[1:])
        return {
            "model": out["model"],
            **demo_scores(cfg.objective, y_test, np.asarray(pred)),
            "tree_seconds": out["tree_seconds"],
        }
    out = await passive_party(party, X, cfg, active=names[0], **saving)
    await predict_passive(party, T, out["model"], active=names[0])
    return {"model": out["model"]}


def _adult_splits(rows: int) -> tuple[Dataset, Dataset]:
    return subsample(load_adult("train"), rows), load_adult("test")


# What the protocols' span names mean, for the Gantt chart's legend.
SPAN_LABELS = {
    "keygen": "make the Paillier key",
    "prefill-obfuscators": "make randomness ahead of use",
    "encrypt": "encrypt g and h",
    "encrypt-warm": "encrypt g and h with ready randomness",
    "encrypt-wait": "wait for the pool to encrypt g and h",
    "send-gh": "send encrypted g and h",
    "receive-gh": "receive encrypted g and h, add arrived chunks to histograms",
    "histograms": "build encrypted histograms",
    "seal": "pack and send encrypted histograms",
    "own-histograms": "histograms of own features (plaintext)",
    "decrypt": "receive (wait for) and decrypt passive parties' histograms",
    "score": "score every candidate split",
}


_METRIC_LABELS = {"auc": "AUC", "rmse": "RMSE", "logloss": "log loss"}


def format_report(report: dict[str, Any], verbose: bool = False) -> str:
    """The one-screen summary of a demo report (``verbose``: also how the crypto ran)."""
    lines = [f"hefl demo {report['protocol']}: {report['mode']}", f"  data: {report['dataset']}"]
    if report["protocol"] == "vf2boost":
        lines += _vf2boost_lines(report, verbose)
    else:
        lines += _batchcrypt_lines(report)
    lines.append(
        f"  {'party':<12} {'sent':>11} {'received':>11} {'busy s':>8} {'idle s':>8} {'idle %':>7}"
    )
    for name, s in report["party_statistics"].items():
        lines.append(
            f"  {name:<12} {_size(s['bytes_sent']):>11} {_size(s['bytes_received']):>11} "
            f"{s['busy_seconds']:>8.1f} {s['idle_seconds']:>8.1f} {s['idle_share']:>7.0%}"
        )
    lines.append("  (busy: computing; idle: waiting for another party's message)")
    return "\n".join(lines)


def _vf2boost_lines(report: dict[str, Any], verbose: bool) -> list[str]:
    same = "yes" if report["identical_to_plaintext_reference"] else "NO"
    scores = ", ".join(
        f"{_METRIC_LABELS.get(k[5:], k[5:])} {v:.5f}" for k, v in report.items() if k[:5] == "test_"
    )
    lines = [
        f"  {report.get('objective', 'binary:logistic')} predicting "
        f"{report.get('target', 'income')}",
        f"  {report['parties']} parties, {_count(report['trees'], 'tree')}, "
        f"{report['key_bits']}-bit Paillier",
        f"  test {scores}; trees identical to the plaintext reference: {same}",
        f"  {report['seconds']:.1f} s in all, {report['seconds_per_tree']:.1f} s per tree, "
        f"prediction {report['predict_seconds']:.1f} s",
    ]
    if not verbose:
        return lines
    short = report["obfuscation"] == "djn-short"
    lines.append(
        f"  randomness: {report['obfuscation']} obfuscators ("
        + ("short exponents, an extra hardness assumption" if short else "full-length exponents")
        + "), made by "
        + _kernel_name(report)
    )
    hit = report["optimistic_hit_rate"]
    if hit is not None:
        lines.append(
            f"  optimistic splitting: the active party's own split won at {hit:.0%} of the nodes\n"
            "    where the passive parties began the next layer on it before the scores were in"
        )
    return lines


def _batchcrypt_lines(report: dict[str, Any]) -> list[str]:
    r = report["mean_round_seconds"]
    return [
        f"  {_count(report['clients'], 'client')} + aggregator, {report['model']}, "
        f"{_count(report['rounds'], 'round')}, r={report['quant_bits']} bits, "
        f"{report['key_bits']}-bit Paillier",
        f"  test accuracy {report['test_accuracy']:.4f} (plaintext FedAvg, same batches: "
        f"{report['plaintext_fedavg_accuracy']:.4f}; gap {report['accuracy_gap_points']:+.2f}"
        " points)",
        f"  {report['seconds']:.1f} s in all; per round: encrypt {r['encrypt']:.3f} s, "
        f"aggregate {r['aggregate']:.3f} s, decrypt {r['decrypt']:.3f} s, "
        f"wall {r['wall']:.3f} s",
        f"  the aggregator received only: {', '.join(report['aggregator_received'])}",
    ]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


def _kernel_name(report: dict[str, Any]) -> str:
    """Which arithmetic made the demo's randomness, for the verbose summary."""
    if not report["native_kernel"]:
        return "pure-Python gmpy2 loops"
    return "hefl's C kernel" + (" with AVX-512 IFMA" if report.get("ifma") else "")
