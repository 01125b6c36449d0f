"""Small numpy models whose parameters travel as flat per-layer vectors.

``MLP([d, C])`` is multinomial logistic regression; ``MLP([784, 128, 10])`` is BatchCrypt's
3-layer fully connected FMNIST model (101,770 parameters). Hidden layers use ReLU, the output
softmax cross-entropy. Every parameter tensor (each weight matrix and bias) is one "layer" for
dACIQ clipping.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hefl.errors import ConfigError

MODELS: tuple[str, ...] = ("logreg", "mlp")


class MLP:
    """A fully connected network with ReLU hidden layers and a softmax output.

    Args:
        sizes: layer widths [inputs, hidden..., classes]; two entries give logistic regression.
        seed: initialisation seed (He-uniform weights, zero biases).
    """

    def __init__(self, sizes: Sequence[int], seed: int = 0) -> None:
        if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
            raise ConfigError(f"layer sizes must be >= 2 positive widths, not {list(sizes)}")
        self.sizes = tuple(int(s) for s in sizes)
        rng = np.random.default_rng(seed)
        self.params: list[np.ndarray] = []
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:], strict=True):
            bound = np.sqrt(6.0 / fan_in) if len(self.sizes) > 2 else 0.0
            self.params.append(rng.uniform(-bound, bound, size=(fan_in, fan_out)))
            self.params.append(np.zeros(fan_out))

    # --- flat views -------------------------------------------------------------------------
    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """The number of values of each parameter tensor, in order."""
        return tuple(p.size for p in self.params)

    @property
    def n_params(self) -> int:
        return sum(self.layer_sizes)

    def get_flat(self) -> np.ndarray:
        """All parameters as one float64 vector (layer after layer)."""
        return np.concatenate([p.ravel() for p in self.params])

    def set_flat(self, flat: np.ndarray) -> None:
        """Load parameters from one flat vector (as produced by :meth:`get_flat`)."""
        flat = np.asarray(flat, dtype=np.float64)
        if flat.shape != (self.n_params,):
            raise ConfigError(f"expected {self.n_params} parameters, got shape {flat.shape}")
        offset = 0
        for i, p in enumerate(self.params):
            self.params[i] = flat[offset : offset + p.size].reshape(p.shape).copy()
            offset += p.size

    # --- forward / backward -----------------------------------------------------------------
    def _forward(self, X: np.ndarray) -> list[np.ndarray]:
        acts = [X]
        h = X
        n_layers = len(self.params) // 2
        for i in range(n_layers):
            W, b = self.params[2 * i], self.params[2 * i + 1]
            z = h @ W + b
            h = np.maximum(z, 0.0) if i < n_layers - 1 else z
            acts.append(h)
        return acts

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities (rows × classes)."""
        return _softmax(self._forward(X)[-1])

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.argmax(self._forward(X)[-1], axis=1)

    def accuracy(self, X: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(self.predict(X) == y))

    def loss(self, X: np.ndarray, y: np.ndarray) -> float:
        """Mean softmax cross-entropy."""
        p = self.predict_proba(X)
        return float(-np.mean(np.log(np.maximum(p[np.arange(len(y)), y], 1e-12))))

    def gradient(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The gradient of the mean cross-entropy on (X, y), as one flat vector."""
        acts = self._forward(X)
        delta = _softmax(acts[-1])
        delta[np.arange(len(y)), y] -= 1.0
        delta /= len(y)
        grads: list[np.ndarray] = [np.empty(0)] * len(self.params)
        n_layers = len(self.params) // 2
        for i in reversed(range(n_layers)):
            grads[2 * i] = acts[i].T @ delta
            grads[2 * i + 1] = delta.sum(axis=0)
            if i > 0:
                delta = (delta @ self.params[2 * i].T) * (acts[i] > 0)
        return np.concatenate([g.ravel() for g in grads])


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def make_model(kind: str, n_features: int, n_classes: int, hidden: int = 128, seed: int = 0) -> MLP:
    """Build ``"logreg"`` (MLP [d, C]) or ``"mlp"`` (MLP [d, hidden, C])."""
    if kind == "logreg":
        return MLP([n_features, n_classes], seed=seed)
    if kind == "mlp":
        return MLP([n_features, hidden, n_classes], seed=seed)
    raise ConfigError(f"model must be one of {MODELS}, not {kind!r}")
