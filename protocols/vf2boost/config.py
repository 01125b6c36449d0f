"""VF2BoostConfig: the validated settings of one federated GBDT training.

Names follow XGBoost where a parameter means the same thing (``n_estimators``, ``max_depth``,
``learning_rate``, ``reg_lambda``, ``gamma``, ``min_child_weight``, ``max_bin``,
``base_score``), so a user can move parameters between the two without surprises.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from hefl.errors import ConfigError
from hefl.protocols.vf2boost.budget import (
    AUTO_MAX_FRAC_BITS,
    MIN_FRAC_BITS,
    BitBudgetError,
    largest_frac_bits,
    plan_bits,
)
from hefl.protocols.vf2boost.objectives import MAX_CLASSES, OBJECTIVES, plan_layout

ENCODINGS = ("fixed", "phe")
MIN_SECURE_KEY_BITS = 2048


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class VF2BoostConfig:
    """Settings of a VF2Boost / SecureBoost training.

    Ties between equal gains are always broken by (party index, feature index, bin), the
    same way in the federated protocol and in :func:`plaintext_reference`.

    Attributes:
        objective: the loss, XGBoost's name: ``"binary:logistic"`` (labels 0/1),
            ``"reg:logistic"`` (targets in [0, 1]), ``"reg:squarederror"`` (any targets) or
            ``"multi:softprob"`` (labels 0..num_class−1).
        num_class: K, the classes of ``multi:softprob`` (2 < K <= 32); 0 otherwise.
        multi_strategy: ``"one_output_per_tree"`` (XGBoost's default: K trees per round, one
            per class) or ``"multi_output_tree"`` (one tree per round with a weight per class
            in every leaf). With ``pack_gh`` every class's g‖h shares one plaintext per row;
            without, the K g's share one plaintext and the K h's another; with
            ``encoding="phe"`` each is its own ciphertext (2K per row).
        n_estimators: number of trees (>= 1).
        max_depth: depth of each tree (1..16; depth d has at most 2^d leaves).
        learning_rate: shrinkage applied to every leaf weight, in (0, 1].
        reg_lambda: L2 regularisation λ on leaf weights (>= 0).
        reg_alpha: L1 regularisation α on leaf weights (>= 0), as XGBoost's.
        max_delta_step: largest magnitude of a leaf weight before the learning rate (0: no
            limit), as XGBoost's.
        gamma: minimum gain (½-scaled, as in the SecureBoost gain formula) a split must exceed.
        min_child_weight: minimum hessian sum in each child of a split (>= 0).
        subsample: share of the rows each tree is grown on, in (0, 1]; the others get g = h = 0
            (as XGBoost's uniform sampling), drawn by the active party from ``seed`` and the
            tree's index (the passive parties cannot tell which rows: zeros are encrypted too).
        colsample_bytree: share of its own columns each party offers per tree, in (0, 1]
            (at least one), drawn by each party from ``seed``, the tree and its index.
        seed: the seed of ``subsample`` and ``colsample_bytree`` (reruns are reproducible).
        eval_metric: the metric an ``eval_set`` is scored with after every round: ``"auc"``,
            ``"logloss"``, ``"error"`` (binary), ``"mlogloss"``, ``"merror"`` (multi-class),
            ``"rmse"`` (any but multi-class); None: XGBoost's default for the objective.
        early_stopping_rounds: stop when the eval metric has not improved for this many
            rounds, and cut the model at the best round (None: train every round).
        max_bin: most value bins per feature (2..256). Missing values (NaN) are kept out of
            the value bins (bin 0); every split learns a default direction for them.
        base_score: initial prediction (XGBoost's convention): a probability in (0, 1) for the
            logistic objectives (the initial margin is logit(base_score)), a value for
            squared error; None means the label mean.
        key_bits: Paillier modulus size. Below 2048 only with ``allow_insecure=True``.
        allow_insecure: explicit opt-in for keys smaller than 2048 bits (tests, demos).
        frac_bits: fixed-point precision of g and h (one global scale 2^frac_bits), an int
            in [8, 62], or ``"auto"`` (the default): the largest precision <= 53 that the
            bit-budget planner proves safe for the training's rows, classes, key size and
            layout (53 unless many classes or a small key need less). Every party and
            :func:`~hefl.protocols.vf2boost.reference.plaintext_reference` resolve it the
            same way (:meth:`resolve`); the parties check they agree.
        chunk_size: rows per encrypted chunk streamed from the active party.
        blaster: pipeline encryption, transfer and histogram building chunk by chunk (else
            encrypt everything, then send, then build).
        optimistic: the active party splits on its own best candidate while passive parties'
            histograms are in flight; a miss is rolled back (reveals a tentative partition).
        reorder: for ``encoding="phe"``, group ciphertexts by exponent before adding.
        pack_gh: pack g and h into one plaintext before encryption (halves the work).
        pack_histograms: Horner-pack several histogram bins into one ciphertext before
            sending them to the active party (fewer decryptions, fewer bytes). With vector
            leaves and ``frac_bits="auto"``, turned off (in the resolved config) when not even
            two K-lane entries fit one ciphertext: an entry then already fills most of it.
        precompute: the active party keeps a pool of Paillier obfuscators filled in the
            background (one process), so idle time makes next tree's randomness and
            encryption on the critical path is a multiplication per value.
        encoding: ``"fixed"`` (one global fixed-point scale) or ``"phe"`` (phe-compatible
            per-value base-16 exponents; needs rescaling when adding).
        obfuscation: how the active party draws Paillier obfuscators: ``"djn"`` (default),
            ``"djn-short"`` (opt-in short exponents, extra assumption) or ``"rn"`` (textbook).
        workers: processes for crypto work per party (None: the runtime's default).
    """

    objective: str = "binary:logistic"
    num_class: int = 0
    multi_strategy: str = "one_output_per_tree"
    n_estimators: int = 10
    max_depth: int = 5
    learning_rate: float = 0.3
    reg_lambda: float = 1.0
    reg_alpha: float = 0.0
    max_delta_step: float = 0.0
    gamma: float = 0.0
    min_child_weight: float = 1.0
    subsample: float = 1.0
    colsample_bytree: float = 1.0
    seed: int = 0
    eval_metric: str | None = None
    early_stopping_rounds: int | None = None
    max_bin: int = 32
    base_score: float | None = None
    key_bits: int = 2048
    allow_insecure: bool = False
    frac_bits: int | str = "auto"
    chunk_size: int = 4096
    blaster: bool = True
    optimistic: bool = True
    reorder: bool = True
    pack_gh: bool = True
    pack_histograms: bool = True
    encoding: str = "fixed"
    obfuscation: str = "djn"
    precompute: bool = True
    workers: int | None = None

    def __post_init__(self) -> None:
        self._validate()

    def _validate(self) -> None:
        def bad(name: str, what: str) -> ConfigError:
            return ConfigError(f"VF2BoostConfig.{name}={getattr(self, name)!r}: {what}")

        for name, lo, hi in (
            ("n_estimators", 1, 100_000),
            ("max_depth", 1, 16),
            ("max_bin", 2, 256),
            ("chunk_size", 1, 10_000_000),
        ):
            v = getattr(self, name)
            if not _is_int(v) or not lo <= v <= hi:
                raise bad(name, f"must be an int in [{lo}, {hi}]")
        fb = self.frac_bits
        if fb != "auto" and (not _is_int(fb) or not MIN_FRAC_BITS <= int(fb) <= 62):
            raise bad("frac_bits", f"must be 'auto' or an int in [{MIN_FRAC_BITS}, 62]")
        if not _is_real(self.learning_rate) or not 0 < self.learning_rate <= 1:
            raise bad("learning_rate", "must be a number in (0, 1]")
        if self.objective not in OBJECTIVES:
            raise bad("objective", f"is not supported; use one of {OBJECTIVES}")
        self._validate_classes(bad)
        for name in ("reg_lambda", "reg_alpha", "max_delta_step", "gamma", "min_child_weight"):
            v = getattr(self, name)
            if not _is_real(v) or v < 0:
                raise bad(name, "must be a finite number >= 0")
        for name in ("subsample", "colsample_bytree"):
            v = getattr(self, name)
            if not _is_real(v) or not 0 < v <= 1:
                raise bad(name, "must be a number in (0, 1]")
        if not _is_int(self.seed) or not 0 <= self.seed < 2**63:
            raise bad("seed", "must be an int in [0, 2^63)")
        self._validate_base_score(bad)
        self._validate_eval(bad)
        if not _is_int(self.key_bits) or self.key_bits < 256 or self.key_bits % 2:
            raise bad("key_bits", "must be an even int >= 256 (2048 or more for real use)")
        if self.key_bits < MIN_SECURE_KEY_BITS and not self.allow_insecure:
            raise bad(
                "key_bits",
                f"keys below {MIN_SECURE_KEY_BITS} bits are insecure; pass "
                "allow_insecure=True to use them in tests or demos",
            )
        for name in (
            "allow_insecure",
            "blaster",
            "optimistic",
            "reorder",
            "pack_gh",
            "pack_histograms",
            "precompute",
        ):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "must be True or False")
        if self.encoding not in ENCODINGS:
            raise bad("encoding", f"must be one of {ENCODINGS}")
        if self.obfuscation not in ("djn", "djn-short", "rn"):
            raise bad("obfuscation", "must be 'djn', 'djn-short' or 'rn'")
        if self.encoding == "phe" and (self.pack_gh or self.pack_histograms):
            raise ConfigError(
                "VF2BoostConfig: encoding='phe' carries a per-value exponent and cannot be "
                "packed; set pack_gh=False and pack_histograms=False (or use encoding='fixed')"
            )
        if self.encoding == "phe" and _is_int(fb) and int(fb) > 53:
            raise bad("frac_bits", "must be <= 53 with encoding='phe' (a float holds 53 bits)")
        if self.workers is not None and (not _is_int(self.workers) or self.workers < 1):
            raise bad("workers", "must be None or an int >= 1")

    def _validate_classes(self, bad: Any) -> None:
        multi = self.objective == "multi:softprob"
        if not _is_int(self.num_class) or (multi and not 2 < self.num_class <= MAX_CLASSES):
            raise bad("num_class", f"must be an int in (2, {MAX_CLASSES}] for multi:softprob")
        if not multi and self.num_class not in (0, 1):
            raise bad("num_class", f"is only for multi:softprob, not {self.objective}")
        if self.multi_strategy not in ("one_output_per_tree", "multi_output_tree"):
            raise bad("multi_strategy", "must be 'one_output_per_tree' or 'multi_output_tree'")
        if self.multi_strategy == "multi_output_tree" and not multi:
            raise bad("multi_strategy", "'multi_output_tree' is for multi:softprob")

    @property
    def resolved_frac_bits(self) -> int:
        """``frac_bits`` as an int.

        Raises:
            ConfigError: it is still ``"auto"`` (call :meth:`resolve` first).
        """
        if not _is_int(self.frac_bits):
            raise ConfigError(
                "VF2BoostConfig.frac_bits='auto' must be resolved for the training's rows and "
                "key first (VF2BoostConfig.resolve)"
            )
        return int(self.frac_bits)

    def resolve(self, n_rows: int) -> VF2BoostConfig:
        """This config with ``frac_bits`` fixed for ``n_rows`` training rows under a
        ``key_bits`` key: ``"auto"`` becomes the largest precision <= 53 the bit-budget planner
        proves safe; an int is checked. Deterministic, so every party gets the same config.

        With ``"auto"``, when not even two entries at the least precision fit one ciphertext
        (vector leaves with many classes: one entry, K lanes, already fills most of it),
        histogram entries travel one per ciphertext: the result has ``pack_histograms=False``.

        Raises:
            BitBudgetError: (a ConfigError) an int ``frac_bits`` that does not fit, naming
                what would; or no precision down to 8 bits fits ("auto").
        """
        layout = plan_layout(self)
        if self.frac_bits == "auto":
            fits = largest_frac_bits(n_rows, self.key_bits, **layout)
            if fits is not None:
                return dataclasses.replace(self, frac_bits=fits)
            if self.pack_histograms and self.vector_leaves:
                alone = largest_frac_bits(
                    n_rows, self.key_bits, **{**layout, "pack_histograms": False}
                )
                if alone is not None:
                    return dataclasses.replace(self, frac_bits=alone, pack_histograms=False)
            try:
                plan_bits(n_rows, MIN_FRAC_BITS, self.key_bits, **layout)
            except BitBudgetError as exc:
                raise BitBudgetError(
                    f"VF2BoostConfig.frac_bits='auto': no precision of {MIN_FRAC_BITS} to "
                    f"{AUTO_MAX_FRAC_BITS} bits fits: {exc}{self._what_fits(n_rows)}"
                ) from None
        try:
            plan_bits(n_rows, self.resolved_frac_bits, self.key_bits, **layout)
        except BitBudgetError as exc:
            fits = largest_frac_bits(n_rows, self.key_bits, self.resolved_frac_bits, **layout)
            hint = f"; frac_bits={fits} fits (or 'auto' picks it)" if fits else ""
            raise BitBudgetError(
                f"VF2BoostConfig.frac_bits={self.frac_bits} does not fit: {exc}"
                + (hint or self._what_fits(n_rows))
            ) from None
        return self

    def _what_fits(self, n_rows: int) -> str:
        """The packing switches turned off that would let some precision fit, and the most
        precision each gives (empty when none does)."""
        found = []
        changes: list[dict[str, Any]] = [
            {"pack_histograms": False},
            {"pack_gh": False, "pack_histograms": False},
        ]
        for change in changes:
            if all(getattr(self, k) == v for k, v in change.items()):
                continue
            other = plan_layout(dataclasses.replace(self, **change))
            fits = largest_frac_bits(n_rows, self.key_bits, **other)
            if fits is not None:
                names = " and ".join(f"{k}={v}" for k, v in change.items())
                found.append(f"{names} fits frac_bits={fits}")
        return "; " + "; ".join(found) if found else ""

    @property
    def vector_leaves(self) -> bool:
        """One tree per round with a leaf weight per class (``multi_output_tree``)."""
        return self.objective == "multi:softprob" and self.multi_strategy == "multi_output_tree"

    def _validate_eval(self, bad: Any) -> None:
        allowed = {
            "binary:logistic": ("auc", "logloss", "error", "rmse"),
            "reg:logistic": ("logloss", "rmse"),
            "reg:squarederror": ("rmse",),
            "multi:softprob": ("mlogloss", "merror"),
        }.get(self.objective, ())
        if self.eval_metric is not None and self.eval_metric not in allowed:
            raise bad("eval_metric", f"is not supported for {self.objective}; use one of {allowed}")
        esr = self.early_stopping_rounds
        if esr is not None and (not _is_int(esr) or esr < 1):
            raise bad("early_stopping_rounds", "must be None or an int >= 1")

    @property
    def metric(self) -> str:
        """The eval metric in force (``eval_metric`` or the objective's default)."""
        default = {"binary:logistic": "logloss", "multi:softprob": "mlogloss"}
        return self.eval_metric or default.get(self.objective, "rmse")

    @property
    def n_trees(self) -> int:
        """Trees in the model: n_estimators rounds of one tree (K with multi:softprob)."""
        per_round = self.num_class if self.objective == "multi:softprob" else 1
        return self.n_estimators * (1 if self.vector_leaves else per_round)

    def _validate_base_score(self, bad: Any) -> None:
        if self.base_score is None:
            return
        if self.objective in ("reg:squarederror", "multi:softprob"):
            if not _is_real(self.base_score):
                raise bad("base_score", "must be a finite number or None (label mean)")
        elif not _is_real(self.base_score) or not 0 < self.base_score < 1:
            raise bad("base_score", "must be a probability in (0, 1) or None (label mean)")

    def replace(self, **changes: Any) -> VF2BoostConfig:
        """Return a copy with some fields changed (validated again).

        Raises:
            ConfigError: an unknown field name or an invalid value.
        """
        names = {f.name for f in dataclasses.fields(self)}
        return dataclasses.replace(self, **from_xgboost_names(changes, names))

    @classmethod
    def serial_baseline(cls, **overrides: Any) -> VF2BoostConfig:
        """The protocol as FATE-style SecureBoost runs it: the peer VF2Boost is measured against.

        One phe-style ciphertext per g and per h (``encoding="phe"``, no re-ordering), textbook
        rⁿ obfuscators made on demand with the public key (as phe does), no pipelining
        (encrypt all, then send, then build), no optimistic splitting, no packing.

        Args:
            overrides: any other fields (e.g. ``n_estimators``, ``key_bits``).

        Raises:
            ConfigError: an invalid override.
        """
        base: dict[str, Any] = {
            "blaster": False,
            "optimistic": False,
            "reorder": False,
            "pack_gh": False,
            "pack_histograms": False,
            "encoding": "phe",
            "obfuscation": "rn",
            "precompute": False,
        }
        base.update(overrides)
        return cls.from_dict(base)  # an unknown override is a ConfigError, not a TypeError

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VF2BoostConfig:
        """Build from a dict (e.g. parsed TOML/JSON, or XGBoost parameters), refusing
        unknown keys. XGBoost's aliases (``eta``, ``lambda``, ``alpha``, ``min_split_loss``,
        ``num_boost_round``, ``random_state``) are accepted; an XGBoost parameter hefl does
        not implement is refused by name.

        Raises:
            ConfigError: unknown keys or invalid values.
        """
        if not isinstance(d, dict):
            raise ConfigError(f"a VF2BoostConfig needs a dict, got {type(d).__name__}")
        return cls(**from_xgboost_names(d, {f.name for f in dataclasses.fields(cls)}))

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (JSON-serialisable)."""
        return dataclasses.asdict(self)


#: XGBoost's aliases -> hefl's field names
XGBOOST_ALIASES = {
    "eta": "learning_rate",
    "lambda": "reg_lambda",
    "alpha": "reg_alpha",
    "min_split_loss": "gamma",
    "num_boost_round": "n_estimators",
    "random_state": "seed",
}

#: XGBoost tree-booster parameters hefl does not implement (refused by name, never ignored)
XGBOOST_UNSUPPORTED = (
    "booster",
    "colsample_bylevel",
    "colsample_bynode",
    "grow_policy",
    "interaction_constraints",
    "max_cat_to_onehot",
    "max_cat_threshold",
    "max_leaves",
    "monotone_constraints",
    "num_parallel_tree",
    "process_type",
    "refresh_leaf",
    "sampling_method",
    "scale_pos_weight",
    "tree_method",
    "updater",
    "enable_categorical",
    "feature_types",
    "max_cached_hist_node",
    "device",
    "nthread",
    "n_jobs",
    "verbosity",
    "validate_parameters",
    "disable_default_eval_metric",
    "seed_per_iteration",
    "sketch_eps",
    "single_precision_histogram",
    "importance_type",
    "missing",
    "huber_slope",
    "quantile_alpha",
    "tweedie_variance_power",
    "aft_loss_distribution",
    "lambdarank_pair_method",
)


def from_xgboost_names(d: dict[str, Any], names: set[str]) -> dict[str, Any]:
    """``d`` with XGBoost's aliases renamed to hefl's fields.

    Raises:
        ConfigError: an XGBoost parameter hefl lacks (named), an alias given together with its
            field, or an unknown key.
    """
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = XGBOOST_ALIASES.get(key, key)
        if name in out:
            raise ConfigError(f"VF2BoostConfig: {key!r} and {name!r} name the same parameter")
        out[name] = value
    unsupported = sorted(k for k in out if k in XGBOOST_UNSUPPORTED)
    if unsupported:
        raise ConfigError(
            f"XGBoost parameter(s) {unsupported} are not supported by hefl's VF2Boost "
            "(refused rather than ignored)"
        )
    unknown = sorted(set(out) - names)
    if unknown:
        raise ConfigError(f"unknown VF2BoostConfig field(s) {unknown}; known: {sorted(names)}")
    return out
