"""The data sets the built-in trainers learn: MNIST-1D and scikit-learn's 8x8 digits.

Both are small enough to live entirely in memory (and on the accelerator), so a trainer never
streams from disk: a :class:`Split` holds six tensors that are moved to the device once and cached
per process, keyed by every argument, so that the hundreds of trials an agent runs share one copy.

The validation split is drawn from the training data with its own ``split_seed`` (not the trial's
seed): every trial of an experiment is then judged on the same validation examples, which keeps the
search signal comparable between trials. The test split is never used for selection.

Nothing here touches global random state for good: MNIST-1D's generator seeds Python's and numpy's
global generators internally, so their states are saved and restored around it (under a lock; code
in other threads that draws from those global generators at that moment could still interleave).
"""

from __future__ import annotations

import functools
import random
import threading
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Split", "load_digits", "load_mnist1d", "stratified_split"]

_GLOBAL_RNG_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class Split:
    """A classification data set split into train / validation / test tensors on one device.

    ``x_*`` are float32 of shape ``(N, *input_shape)``; ``y_*`` are int64 class indices.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    input_shape: tuple[int, ...]
    num_classes: int

    def to(self, device: str | torch.device) -> Split:
        """The same split with every tensor on ``device``."""
        return Split(
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_val=self.x_val.to(device),
            y_val=self.y_val.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
            input_shape=self.input_shape,
            num_classes=self.num_classes,
        )


def stratified_split(
    labels: np.ndarray, fractions: tuple[float, ...], seed: int
) -> list[np.ndarray]:
    """Indices of ``labels`` cut into ``len(fractions) + 1`` parts, class by class.

    Part ``i`` receives ``round(fractions[i] * n_c)`` examples of each class ``c`` (the last part
    gets the rest), so every part keeps the class balance; order is shuffled with ``seed``.
    """
    if any(f < 0 for f in fractions) or sum(fractions) >= 1.0:
        raise ValueError(f"split fractions must be >= 0 and sum to < 1, got {fractions}")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        start = 0
        for part, fraction in enumerate(fractions):
            count = round(fraction * len(members))
            parts[part].append(members[start : start + count])
            start += count
        parts[-1].append(members[start:])
    return [rng.permutation(np.concatenate(chunks)) for chunks in parts]


def _mnist1d_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The official MNIST-1D data (4,000 train, 1,000 test), generated offline, once per process.

    The lock makes concurrent first callers wait for one generation instead of repeating it.
    """
    with _GLOBAL_RNG_LOCK:
        return _generate_mnist1d()


@functools.lru_cache(maxsize=1)
def _generate_mnist1d() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    import mnist1d.data  # a slow import, only needed here

    python_state = random.getstate()
    numpy_state = np.random.get_state()
    try:
        data = mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
    return (
        np.asarray(data["x"], dtype=np.float32),
        np.asarray(data["y"], dtype=np.int64),
        np.asarray(data["x_test"], dtype=np.float32),
        np.asarray(data["y_test"], dtype=np.int64),
    )


def _as_split(
    x: np.ndarray,
    y: np.ndarray,
    parts: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    num_classes: int,
) -> Split:
    """Tensors for the train / val index parts of ``(x, y)`` and the given test arrays."""
    train_idx, val_idx = parts
    x_test, y_test = test
    return Split(
        x_train=torch.from_numpy(np.ascontiguousarray(x[train_idx])),
        y_train=torch.from_numpy(np.ascontiguousarray(y[train_idx])),
        x_val=torch.from_numpy(np.ascontiguousarray(x[val_idx])),
        y_val=torch.from_numpy(np.ascontiguousarray(y[val_idx])),
        x_test=torch.from_numpy(np.ascontiguousarray(x_test)),
        y_test=torch.from_numpy(np.ascontiguousarray(y_test)),
        input_shape=tuple(x.shape[1:]),
        num_classes=num_classes,
    )


@functools.lru_cache(maxsize=8)
def load_mnist1d(split_seed: int = 0, val_fraction: float = 0.1, device: str = "cpu") -> Split:
    """MNIST-1D: the official 4,000 training signals cut into train / val, and the official 1,000
    test signals; inputs ``(N, 1, 40)`` standardised with the training part's mean and std."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if device != "cpu":
        return load_mnist1d(split_seed, val_fraction, "cpu").to(device)
    x, y, x_test, y_test = _mnist1d_arrays()
    val_idx, train_idx = stratified_split(y, (val_fraction,), split_seed)
    mean, std = float(x[train_idx].mean()), float(x[train_idx].std())
    x = ((x - mean) / std)[:, None, :]
    x_test = ((x_test - mean) / std)[:, None, :]
    return _as_split(x, y, (train_idx, val_idx), (x_test, y_test), num_classes=10)


@functools.lru_cache(maxsize=8)
def load_digits(
    split_seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.2, device: str = "cpu"
) -> Split:
    """scikit-learn's 1,797 handwritten 8x8 digits: ``(N, 1, 8, 8)`` in [0, 1], a stratified
    seeded train / val / test split (60 / 20 / 20 by default)."""
    if device != "cpu":
        return load_digits(split_seed, val_fraction, test_fraction, "cpu").to(device)
    from sklearn.datasets import load_digits as sklearn_digits  # bundled with sklearn: offline

    bunch = sklearn_digits()
    x = (np.asarray(bunch.images, dtype=np.float32) / 16.0)[:, None, :, :]
    y = np.asarray(bunch.target, dtype=np.int64)
    val_idx, test_idx, train_idx = stratified_split(y, (val_fraction, test_fraction), split_seed)
    return _as_split(x, y, (train_idx, val_idx), (x[test_idx], y[test_idx]), num_classes=10)
