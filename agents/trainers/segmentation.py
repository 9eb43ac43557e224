"""ISBI-2012 EM membrane slices and the segmentation scores the U-Net trainer reports.

The data folder holds ``image/<i>.png`` and ``label/<i>.png`` for ``i = 0 .. 29``: 512x512 grey
serial-section EM slices and their labels (255 = cell interior, 0 = membrane). The split is fixed:
slices 0-19 train, 20-24 validate (the search's selection signal), 25-29 are held out for the
reported score.

Slices are shrunk by an integer ``scale`` by block averaging. A shrunk pixel is membrane when at
least a quarter of its block is: thin membranes stay closed, so the cells keep the count they
have at full resolution (about 140 in slice 0 at scales 1, 4 and 8, where a majority vote would
merge cells at scale 8).

Scores compare boolean *membrane* masks (True = membrane, the foreground):

- pixel accuracy: the share of pixels classified right;
- IoU: membrane intersection over membrane union, pooled over the slices;
- Rand error: ``1 - Rand index`` between the two segmentations, averaged over slices. A mask's
  segmentation is the connected components (4-connected) of its cell-interior pixels, with all
  membrane pixels as one more segment; the index counts the pixel pairs on which the two
  segmentations agree (same segment in both, or different in both), from the contingency table
  of their labels.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from scipy import ndimage

SLICES = 30
TRAIN = range(0, 20)
VALIDATION = range(20, 25)
TEST = range(25, 30)
MEMBRANE_SHARE = 0.25
"""A shrunk pixel is membrane when at least this share of its block is membrane."""


@dataclass(frozen=True, slots=True)
class Slices:
    """All 30 slices at one scale: images in [0, 1] and membrane masks, both ``(30, H, W)``."""

    images: NDArray[np.float32]
    membrane: NDArray[np.bool_]


def _read(path: Path) -> NDArray[np.float64]:
    if not path.is_file():
        raise ValueError(f"missing slice {path}")
    with Image.open(path) as image:
        return np.asarray(image.convert("L"), dtype=np.float64)


def _blocks(array: NDArray[np.float64], scale: int) -> NDArray[np.float64]:
    """Mean over ``scale x scale`` blocks (edges that do not fill a block are cut off)."""
    h, w = array.shape[0] // scale, array.shape[1] // scale
    if h == 0 or w == 0:
        raise ValueError(f"scale {scale} is larger than the {array.shape} slices")
    cut = array[: h * scale, : w * scale]
    blocks: NDArray[np.float64] = cut.reshape(h, scale, w, scale).mean(axis=(1, 3))
    return blocks


@functools.lru_cache(maxsize=4)
def _load(folder: str, scale: int) -> Slices:
    root = Path(folder)
    images, membrane = [], []
    for index in range(SLICES):
        image = _read(root / "image" / f"{index}.png")
        label = _read(root / "label" / f"{index}.png")
        if image.shape != label.shape:
            raise ValueError(f"slice {index}: image {image.shape} and label {label.shape} differ")
        images.append(_blocks(image / 255.0, scale))
        membrane.append(_blocks((label < 128).astype(np.float64), scale) >= MEMBRANE_SHARE)
    slices = Slices(np.stack(images).astype(np.float32), np.stack(membrane))
    slices.images.flags.writeable = False
    slices.membrane.flags.writeable = False
    return slices


def load_slices(data_dir: str | Path, scale: int) -> Slices:
    """The 30 slices of ``data_dir`` shrunk by ``scale`` (cached; the arrays are read-only).

    Raises ValueError naming the folder when it or a slice is missing.
    """
    root = Path(data_dir)
    if not (root / "image").is_dir() or not (root / "label").is_dir():
        raise ValueError(
            f"data folder {str(root)!r} must hold image/ and label/ with 0.png .. 29.png "
            "(the ISBI-2012 EM membrane slices)"
        )
    return _load(str(root.resolve()), scale)


def segments(membrane: NDArray[np.bool_]) -> NDArray[np.int64]:
    """Label image of one mask: each 4-connected cell 1, 2, ...; membrane pixels 0."""
    labels, _ = ndimage.label(~membrane)
    return np.asarray(labels, dtype=np.int64)


def _pairs(counts: NDArray[np.int64]) -> float:
    return float((counts * (counts - 1) // 2).sum())


def rand_error(predicted: NDArray[np.bool_], truth: NDArray[np.bool_]) -> float:
    """``1 - Rand index`` of the segmentations of two membrane masks of one slice (0 = same)."""
    a, b = segments(predicted).ravel(), segments(truth).ravel()
    n = a.size
    if n < 2:
        return 0.0
    joint = a * (int(b.max()) + 1) + b
    same_a = _pairs(np.unique(a, return_counts=True)[1])
    same_b = _pairs(np.unique(b, return_counts=True)[1])
    same_both = _pairs(np.unique(joint, return_counts=True)[1])
    disagreements = same_a + same_b - 2.0 * same_both
    return disagreements / (n * (n - 1) / 2)


def scores(predicted: NDArray[np.bool_], truth: NDArray[np.bool_]) -> dict[str, float]:
    """``acc``, ``iou`` (membrane) and ``rand_error`` of a stack of ``(N, H, W)`` masks."""
    if predicted.shape != truth.shape:
        raise ValueError(f"prediction {predicted.shape} and truth {truth.shape} differ")
    union = int(np.logical_or(predicted, truth).sum())
    intersection = int(np.logical_and(predicted, truth).sum())
    errors = [rand_error(p, t) for p, t in zip(predicted, truth, strict=True)]
    return {
        "acc": float((predicted == truth).mean()),
        "iou": intersection / union if union else 1.0,
        "rand_error": float(np.mean(errors)),
    }
