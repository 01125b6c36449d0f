"""Datasets for federated training: bundled UCI Adult and Fashion-MNIST from Debian."""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hefl.errors import ConfigError

FMNIST_DIR_ENV = "HEFL_FMNIST_DIR"
FMNIST_DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
_FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
DATASETS: tuple[str, ...] = ("adult", "fmnist")


@dataclass(frozen=True)
class TrainTest:
    """A classification task: float64 features, int64 class labels 0..n_classes-1."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    name: str

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])


def _read_idx(path: Path) -> np.ndarray:
    """Read one gzipped IDX file (the MNIST format) into a uint8 array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ConfigError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ConfigError(f"{path} is truncated: expected {int(np.prod(dims))} bytes of data")
    return body.reshape(dims)


def load_fmnist(directory: str | os.PathLike[str] | None = None) -> TrainTest:
    """Load Fashion-MNIST (60,000 train and 10,000 test images, 10 classes).

    Pixels are scaled to [0, 1] and flattened to 784 features.

    Args:
        directory: where the four gzipped IDX files are; default ``$HEFL_FMNIST_DIR`` or
            ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``).

    Raises:
        ConfigError: if the files are missing (with the command that installs them).
    """
    root = Path(directory or os.environ.get(FMNIST_DIR_ENV) or FMNIST_DEFAULT_DIR)
    arrays = {}
    for split, (images, labels) in _FMNIST_FILES.items():
        paths = (root / images, root / labels)
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise ConfigError(
                f"Fashion-MNIST files not found: {', '.join(missing)}. Install them with "
                "`apt-get update && apt-get install -y dataset-fashion-mnist`, or point "
                f"{FMNIST_DIR_ENV} at a directory holding the four gzipped IDX files"
            )
        X = _read_idx(paths[0]).reshape(-1, 784).astype(np.float64) / 255.0
        y = _read_idx(paths[1]).astype(np.int64)
        if len(X) != len(y):
            raise ConfigError(f"Fashion-MNIST {split}: {len(X)} images but {len(y)} labels")
        arrays[split] = (X, y)
    return TrainTest(*arrays["train"], *arrays["test"], n_classes=10, name="fmnist")


def load_adult_task() -> TrainTest:
    """The bundled UCI Adult, one-hot encoded and standardized (official train/test split)."""
    from hefl.data import adult_design_matrix, load_adult

    train, test = load_adult("train"), load_adult("test")
    X_train, X_test, _ = adult_design_matrix(train, test)
    return TrainTest(X_train, train.y, X_test, test.y, n_classes=2, name="adult")


def load_task(name: str) -> TrainTest:
    """Load a dataset by name: ``"adult"`` (bundled) or ``"fmnist"`` (Debian package)."""
    if name == "adult":
        return load_adult_task()
    if name == "fmnist":
        return load_fmnist()
    raise ConfigError(f"dataset must be one of {DATASETS}, not {name!r}")


def split_horizontal(
    X: np.ndarray, y: np.ndarray, k: int, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split rows among k clients: shuffle once, then k nearly equal contiguous shards.

    Args:
        X: feature rows.
        y: labels, one per row.
        k: number of clients (1..len(X)).
        seed: shuffling seed (reproducible splits; not a secret).

    Returns:
        k (X_i, y_i) pairs whose rows partition the input.
    """
    if len(X) != len(y):
        raise ConfigError(f"X has {len(X)} rows but y has {len(y)} labels")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(X):
        raise ConfigError(f"cannot split {len(X)} rows among {k!r} clients")
    order = np.random.default_rng(seed).permutation(len(X))
    return [(X[part], y[part]) for part in np.array_split(order, k)]
