"""Worker for benchmarks/secretflow_sgb.py: trains SecretFlow SGB on arrays from an .npz file.

Runs inside a separate SecretFlow venv (Python 3.10, ``secretflow==1.14.0b0``), never in
hefl's. The driver writes the arrays (same Adult split as hefl's benchmark) and reads the JSON
this script writes. It imports nothing from hefl.

Usage:  python secretflow_sgb_worker.py DATA.npz OUT.json --schema paillier|ou --trees 10
        python secretflow_sgb_worker.py DATA.npz BINS.npz --export-bins
            (no training: writes the bin index of every value, cut by SGB's own quantile
            sketch, train cut points applied to the test rows)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import time


class _TreeTimes(logging.Handler):
    """Collects SGB's own per-tree times from its "epoch i time t s" log lines."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seconds: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        m = re.match(r"epoch (\d+) time ([0-9.eE+-]+)s", record.getMessage())
        if m:
            self.seconds.append(float(m.group(2)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--schema", default="paillier", help="HEU schema: paillier, ou, ...")
    ap.add_argument("--trees", type=int, default=10)
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--max-bin", type=int, default=32)
    ap.add_argument("--depth", type=int, default=5)
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--export-bins", action="store_true")
    args = ap.parse_args()

    import numpy as np

    if args.export_bins:
        from secretflow.ml.boost.core.order_map_tools import qcut

        d = np.load(args.data)
        out = {}
        for side in ("xa", "xp"):
            tr, te = d[side + "_train"], d[side + "_test"]
            btr, bte = np.zeros_like(tr), np.zeros_like(te)
            for f in range(tr.shape[1]):
                # SGB: buckets = ceil(1 / sketch_eps)
                btr[:, f], cuts = qcut(tr[:, f], args.max_bin)
                bte[:, f] = np.digitize(te[:, f], cuts)
            out[side + "_train"], out[side + "_test"] = btr, bte
        np.savez(args.out, **out)
        return
    import secretflow as sf
    import spu
    from secretflow.data import FedNdarray, PartitionWay
    from secretflow.ml.boost.sgb_v import Sgb

    d = np.load(args.data)
    t_init = time.perf_counter()
    # secretflow 1.14 moved the Ray simulation mode to secretflow_fl; its single-process
    # mode is debug_mode (every party in this process, tasks run inline)
    sf.init(["alice", "bob"], debug_mode=True)
    alice, bob = sf.PYU("alice"), sf.PYU("bob")  # alice: active (labels, key); bob: passive
    heu = sf.HEU(
        {
            "sk_keeper": {"party": "alice"},
            "evaluators": [{"party": "bob"}],
            "mode": "PHEU",
            "he_parameters": {
                "schema": args.schema,
                "key_pair": {"generate": {"bit_size": args.key_bits}},
            },
        },
        spu.FieldType.FM128,
    )
    init_s = time.perf_counter() - t_init
    times = _TreeTimes()
    root = logging.getLogger()
    root.addHandler(times)
    root.setLevel(logging.INFO)
    for h in root.handlers:
        if h is not times:
            h.setLevel(logging.WARNING)

    def fed(a, b):
        return FedNdarray(
            partitions={alice: alice(lambda: a)(), bob: bob(lambda: b)()},
            partition_way=PartitionWay.VERTICAL,
        )

    x_train = fed(d["xa_train"], d["xp_train"])
    y_train = FedNdarray(
        partitions={alice: alice(lambda: d["y_train"].reshape(-1, 1))()},
        partition_way=PartitionWay.VERTICAL,
    )
    x_test = fed(d["xa_test"], d["xp_test"])
    sf.wait([p for p in x_train.partitions.values()] + list(y_train.partitions.values()))
    params = {
        "num_boost_round": args.trees,
        "max_depth": args.depth,
        "learning_rate": 0.3,
        "sketch_eps": 1.0 / args.max_bin,
        "objective": "logistic",
        "reg_lambda": 1.0,
        "gamma": 0.0,
        "rowsample_by_tree": 1.0,
        "colsample_by_tree": 1.0,
        "base_score": 0.0,
        "first_tree_with_label_holder_feature": False,
        "enable_packbits": False,
        "batch_encoding_enabled": True,
        "enable_quantization": False,
        "enable_monitor": False,
        "enable_early_stop": False,
    }
    t0 = time.perf_counter()
    model = Sgb(heu).train(params, x_train, y_train)
    fit_s = time.perf_counter() - t0
    # the prediction's reveal also waits for any training task still in flight
    pred = np.asarray(sf.reveal(model.predict(x_test))).reshape(-1)
    synced_s = time.perf_counter() - t0
    out = {
        "schema": args.schema,
        "key_bits": args.key_bits,
        "trees": len(model.trees),
        "fit_seconds": fit_s,
        "seconds_per_tree": fit_s / max(1, len(model.trees)),
        "tree_seconds": times.seconds,
        "fit_and_test_predict_seconds": synced_s,
        "init_seconds": init_s,
        "params": params,
        "test_pred": pred.tolist(),
        "secretflow_version": sf.__version__,
    }
    with open(args.out, "w") as f:
        json.dump(out, f)
    sf.shutdown()


if __name__ == "__main__":
    main()
