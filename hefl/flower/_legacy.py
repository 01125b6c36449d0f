"""Apps written with Flower's ``NumPyClient`` (``ClientApp(client_fn=...)``) as well.

Flower's legacy handler reads a train message's model from ``"fitins.parameters"`` and its
config from ``"fitins.config"``, and replies with ``"fitres.*"`` records; the message API
uses ``"arrays"``, ``"config"`` and ``"metrics"``. The mod sends both forms to the app and
reads whichever form the app answers in, so the same mod serves both kinds of ClientApp.
"""

from __future__ import annotations

from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.common import EvaluateIns, FitIns, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common.recorddict_compat import (
    evaluateins_to_recorddict,
    fitins_to_recorddict,
    recorddict_to_fitres,
)

from hefl.errors import ConfigError
from hefl.flower._wire import ARRAYS_KEY, CONFIG_KEY, METRICS_KEY

_FIT = "fitres.parameters"
_EVAL_LOSS = "evaluateres.loss"


def _numbers(config: ConfigRecord | dict) -> MetricRecord:
    """The int/float entries of a legacy metrics dict, as a MetricRecord."""
    return MetricRecord(
        {
            k: v
            for k, v in dict(config).items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
    )


def train_content(model: ArrayRecord, config: ConfigRecord) -> RecordDict:
    """A train message's content in both forms: ``arrays``/``config`` and ``fitins.*``."""
    params = ndarrays_to_parameters([a.numpy() for a in model.values()])
    legacy = fitins_to_recorddict(FitIns(params, dict(config)), keep_input=True)  # type: ignore[arg-type]
    return RecordDict({ARRAYS_KEY: model, CONFIG_KEY: config, **dict(legacy.items())})


def evaluate_content(content: RecordDict, model: ArrayRecord) -> RecordDict:
    """An evaluate message's content with the held model added in both forms."""
    config = content.config_records.get(CONFIG_KEY) or ConfigRecord()
    params = ndarrays_to_parameters([a.numpy() for a in model.values()])
    legacy = evaluateins_to_recorddict(EvaluateIns(params, dict(config)), keep_input=True)  # type: ignore[arg-type]
    return RecordDict({**dict(content.items()), ARRAYS_KEY: model, **dict(legacy.items())})


def trained(
    reply: RecordDict, before: ArrayRecord, weight_key: str, node: int
) -> tuple[ArrayRecord | None, MetricRecord]:
    """The trained model and the metrics of a train reply, whichever form it has.

    Returns:
        (model or None if the reply has none, metrics with the weight under ``weight_key``).

    Raises:
        ConfigError: a legacy reply has another number of arrays than the model.
    """
    if _FIT not in reply.array_records:
        after = reply.array_records.get(ARRAYS_KEY) or next(
            iter(reply.array_records.values()), None
        )
        metrics = reply.metric_records.get(METRICS_KEY)
        metrics = metrics or next(iter(reply.metric_records.values()), None) or MetricRecord()
        return after, metrics
    res = recorddict_to_fitres(reply, keep_input=True)
    arrays = parameters_to_ndarrays(res.parameters)
    if len(arrays) != len(before):
        raise ConfigError(
            f"node {node}: the app's fit returned {len(arrays)} arrays, the model has {len(before)}"
        )
    after = ArrayRecord({k: Array(a) for k, a in zip(before.keys(), arrays, strict=True)})
    metrics = _numbers(res.metrics)
    metrics[weight_key] = int(res.num_examples)
    return after, metrics


def evaluated(reply: RecordDict, weight_key: str) -> RecordDict:
    """A legacy evaluate reply as ``{"metrics": {"loss", weight_key, ...}}``; others as is."""
    if _EVAL_LOSS not in reply.metric_records:
        return reply
    metrics = _numbers(reply.config_records.get("evaluateres.metrics") or {})
    metrics["loss"] = float(reply.metric_records[_EVAL_LOSS]["loss"])  # type: ignore[arg-type]
    n = reply.metric_records["evaluateres.num_examples"]["num_examples"]
    metrics[weight_key] = n
    return RecordDict({METRICS_KEY: metrics})
