"""The seed's U-Net slide as a PNG: input slice, ground truth, default and best predictions.

:func:`write_figure` trains the seed's default U-Net (:attr:`UNetSpace.DEFAULT_GENOTYPE`) and a
search's best genotype with the U-Net EM trainer's own code (same options, epochs and seed),
segments the first held-out slice (25) with each, and writes four panels side by side, each
under a title; the two predictions' titles carry their held-out scores (pixel accuracy,
membrane IoU and Rand error over slices 25-29, as the trainer reports them). Membrane is black,
cell interior white, as in the ISBI labels.

From the command line, after a search::

    python -m agents.unet_figure --db nasd.db --experiment unet-em --out unet.png

reads the experiment's stored config (space and task) and its best trial's genotype from the
nasd database, opened read-only. The best trial is chosen by the experiment's objective
(:class:`nasd.core.objective.BestSoFar` over the results in arrival order), as ``nasd best`` does.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from agents.trainers._base import TrainRequest
from agents.trainers.segmentation import TEST
from agents.trainers.unet_em import TrainedUNet, fit_unet, predict
from nasd.core.objective import BestSoFar, Objective
from nasd.core.space.unet import UNetSpace

log = structlog.get_logger("nasd.unet_figure")

MARGIN = 8
TITLE_LINES = 5
LINE_HEIGHT = 17
FONT_SIZE = 13
TITLE_HEIGHT = TITLE_LINES * LINE_HEIGHT + MARGIN
SHOWN_SLICE = TEST.start


def figure_size(panel_size: int) -> tuple[int, int]:
    """Width and height in pixels of a figure with four ``panel_size`` square panels."""
    return 4 * panel_size + 5 * MARGIN, TITLE_HEIGHT + panel_size + MARGIN


class _Quiet:
    """A training context that never stops and keeps progress to the log."""

    def __init__(self, name: str) -> None:
        self.name = name

    def progress(self, step: int, total: int | None, metrics: Mapping[str, float]) -> None:
        log.info("unet_figure.epoch", model=self.name, epoch=step, epochs=total, **metrics)

    def should_stop(self) -> bool:
        return False


def _train(
    name: str,
    genotype: Mapping[str, Any],
    space_spec: Mapping[str, Any],
    options: Mapping[str, Any],
    epochs: int | None,
    seed: int,
    device: str,
) -> TrainedUNet:
    request = TrainRequest(
        job_id=f"figure-{name}",
        experiment="unet-figure",
        trial_id=0,
        genotype=dict(genotype),
        space=dict(space_spec),
        options=dict(options),
        epochs=epochs,
        seed=seed,
        device=device,
    )
    trained = fit_unet(request, _Quiet(name))
    log.info("unet_figure.trained", model=name, **trained.metrics)
    return trained


def _mask_image(membrane: NDArray[np.bool_], size: int) -> Image.Image:
    pixels = np.where(membrane, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels).resize((size, size), Image.Resampling.NEAREST)


def _scores_line(metrics: Mapping[str, float]) -> str:
    return (
        f"test acc {metrics['test_acc']:.3f} IoU {metrics['test_iou']:.3f} "
        f"RE {metrics['test_rand_error']:.3f}"
    )


def _genotype_lines(genotype: Mapping[str, Any]) -> list[str]:
    """The genotype in three short lines that fit a 256-pixel panel."""
    return [
        f"m{genotype['min_kernels']} k{genotype['kernel_size']} {genotype['activation']}",
        f"{genotype['initializer']} {genotype['regularizer']}",
        f"drop={genotype['dropout']:.3g} lr={genotype['lr']:.3g}",
    ]


def _prediction(trained: TrainedUNet) -> NDArray[np.bool_]:
    image = trained.slices.images[SHOWN_SLICE : SHOWN_SLICE + 1]
    if trained.diverged:
        return np.zeros(image.shape[-2:], dtype=np.bool_)
    device = next(trained.model.parameters()).device
    return predict(trained.model, image, device)[0]


def write_figure(
    data_dir: str | Path,
    space_spec: Mapping[str, Any],
    best_genotype: Mapping[str, Any],
    out_path: str | Path,
    *,
    options: Mapping[str, Any],
    seed: int = 0,
    epochs: int | None = None,
    device: str = "cpu",
    panel_size: int = 256,
) -> Path:
    """Train both networks, draw the four panels and write the PNG; return its path.

    ``options`` are the trainer's task options (``data`` is replaced by ``data_dir``); ``epochs``
    is the per-trial budget (the trainer's default when None). The image is
    :func:`figure_size` ``(panel_size)`` pixels.
    """
    options = {**options, "data": str(data_dir)}
    UNetSpace.from_spec(space_spec).validate(dict(best_genotype))
    default = _train(
        "default", UNetSpace.DEFAULT_GENOTYPE, space_spec, options, epochs, seed, device
    )
    best = _train("best", best_genotype, space_spec, options, epochs, seed, device)
    slices = default.slices
    image = np.asarray(slices.images[SHOWN_SLICE] * 255.0).round().astype(np.uint8)
    panels = [
        (
            ["input", f"held-out slice {SHOWN_SLICE}", f"scale 1/{options.get('scale', 4)}"],
            Image.fromarray(image).resize((panel_size, panel_size)),
        ),
        (
            ["ground truth", "membrane black"],
            _mask_image(slices.membrane[SHOWN_SLICE], panel_size),
        ),
    ]
    for name, trained, genotype in (
        ("default U-Net", default, UNetSpace.DEFAULT_GENOTYPE),
        ("best model", best, best_genotype),
    ):
        title = name + (" (diverged)" if trained.diverged else "")
        lines = [title, *_genotype_lines(genotype), _scores_line(trained.metrics)]
        panels.append((lines, _mask_image(_prediction(trained), panel_size)))
    canvas = Image.new("RGB", figure_size(panel_size), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=FONT_SIZE)
    for column, (lines, panel) in enumerate(panels):
        left = MARGIN + column * (panel_size + MARGIN)
        for row, line in enumerate(lines):
            draw.text((left, MARGIN // 2 + row * LINE_HEIGHT), line, fill="black", font=font)
        canvas.paste(panel.convert("RGB"), (left, TITLE_HEIGHT))
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out, format="PNG")
    log.info("unet_figure.written", path=str(out), size=canvas.size)
    return out


def read_experiment(db: Path, experiment: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The experiment's stored config and its best trial's genotype, read-only.

    Raises ValueError when the database, the experiment or a finished trial is missing.
    """
    if not db.is_file():
        raise ValueError(f"no database at {db}")
    conn = sqlite3.connect(f"file:{db.resolve()}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT config FROM experiments WHERE name = ?", (experiment,))
        found = row.fetchone()
        if found is None:
            raise ValueError(f"no experiment {experiment!r} in {db}")
        config: dict[str, Any] = json.loads(found[0])
        tracker = BestSoFar(Objective.of_strategy(config["strategy"]))
        genotypes: dict[int, str] = {}
        for trial_id, metrics, genotype in conn.execute(
            "SELECT r.trial_id, r.metrics, t.genotype FROM results r"
            " JOIN trials t ON t.job_id = r.job_id WHERE r.experiment = ? ORDER BY r.rowid",
            (experiment,),
        ):
            if tracker.offer(trial_id, json.loads(metrics)):
                genotypes[trial_id] = genotype
    finally:
        conn.close()
    if tracker.best is None:
        raise ValueError(f"experiment {experiment!r} has no finished trial yet")
    best: dict[str, Any] = json.loads(genotypes[tracker.best.trial_id])
    return config, best


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m agents.unet_figure``: the figure of a finished U-Net search (module doc)."""
    parser = argparse.ArgumentParser(prog="python -m agents.unet_figure", description=__doc__)
    parser.add_argument("--db", type=Path, required=True, help="the nasd SQLite database")
    parser.add_argument("--experiment", required=True, help="the experiment's name")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--data", help="the slices' folder (default: the task's options.data)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
    args = parser.parse_args(argv)
    try:
        config, genotype = read_experiment(args.db, args.experiment)
        space, task = config["space"], config["task"]
        if space.get("kind") != UNetSpace.kind:
            raise ValueError(
                f"experiment {args.experiment!r} searches a {space.get('kind')!r} space"
            )
        options = dict(task.get("options", {}))
        data = args.data or options.get("data")
        if not data:
            raise ValueError("no data folder: the task has no options.data; pass --data")
        out = write_figure(
            data,
            space,
            genotype,
            args.out,
            options=options,
            seed=args.seed,
            epochs=task.get("epochs"),
            device=args.device,
        )
    except (ValueError, sqlite3.Error) as error:
        print(f"unet_figure: {error}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
