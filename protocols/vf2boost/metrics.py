"""Evaluation metrics in plain numpy (no scikit-learn dependency), by XGBoost's names."""

from __future__ import annotations

import numpy as np

from hefl.errors import ConfigError


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties).

    Raises:
        ConfigError: shapes differ or only one class is present.
    """
    y = np.asarray(y).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ConfigError(f"labels {y.shape} and scores {s.shape} differ in shape")
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        raise ConfigError("AUC needs both classes among the labels")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(len(s), dtype=np.float64)
    # average ranks over runs of equal scores
    boundaries = np.flatnonzero(np.diff(sorted_s)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(s)]))
    avg = (starts + ends + 1) / 2.0  # 1-based average rank of each run
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def rmse(y: np.ndarray, pred: np.ndarray) -> float:
    """Root mean squared error."""
    d = np.asarray(pred, dtype=np.float64).ravel() - np.asarray(y, dtype=np.float64).ravel()
    return float(np.sqrt(np.mean(d * d)))


def logloss(y: np.ndarray, proba: np.ndarray) -> float:
    """Binary log loss of probabilities of class 1 (clipped to [1e-15, 1 − 1e-15])."""
    p = np.clip(np.asarray(proba, dtype=np.float64).ravel(), 1e-15, 1 - 1e-15)
    t = np.asarray(y, dtype=np.float64).ravel()
    return float(-np.mean(t * np.log(p) + (1 - t) * np.log(1 - p)))


def error(y: np.ndarray, proba: np.ndarray) -> float:
    """Binary error rate: share of rows where (p > 0.5) differs from the label."""
    wrong = (np.asarray(proba).ravel() > 0.5) != (np.asarray(y).ravel() == 1)
    return float(np.mean(wrong))


def mlogloss(y: np.ndarray, proba: np.ndarray) -> float:
    """Multi-class log loss of (rows × K) probabilities."""
    p = np.clip(np.asarray(proba, dtype=np.float64), 1e-15, 1.0)
    idx = np.asarray(y).astype(np.int64).ravel()
    return float(-np.mean(np.log(p[np.arange(len(idx)), idx])))


def merror(y: np.ndarray, proba: np.ndarray) -> float:
    """Multi-class error rate of (rows × K) probabilities (argmax)."""
    return float(np.mean(np.argmax(proba, axis=1) != np.asarray(y).astype(np.int64).ravel()))


#: eval_metric name -> (function of (labels, predictions), higher is better)
METRICS = {
    "auc": (roc_auc, True),
    "logloss": (logloss, False),
    "error": (error, False),
    "rmse": (rmse, False),
    "mlogloss": (mlogloss, False),
    "merror": (merror, False),
}


def default_metric(objective: str) -> str:
    """XGBoost's default eval_metric of an objective."""
    return {"binary:logistic": "logloss", "multi:softprob": "mlogloss"}.get(objective, "rmse")


def evaluate(metric: str, y: np.ndarray, pred: np.ndarray) -> float:
    """``metric`` (a :data:`METRICS` name) of predictions ``pred`` against labels ``y``.

    Raises:
        ConfigError: an unknown metric (names it and the known ones).
    """
    if metric not in METRICS:
        raise ConfigError(f"eval_metric={metric!r} is not supported; use one of {sorted(METRICS)}")
    return METRICS[metric][0](y, pred)
