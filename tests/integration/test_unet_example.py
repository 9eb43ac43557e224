"""The U-Net EM example end to end at a tiny budget: ``nasd run`` on a copy of
``examples/unet_em.toml`` (both models, real training on the ISBI-2012 slices, the figure).

Needs ``../shared/data/isbi2012_membrane`` (CI has it); skipped with a message without it.
"""

from __future__ import annotations

import csv
import io
import json
import tomllib
from pathlib import Path

import pytest
from PIL import Image

from tests.harness import ROOT, python_env, query
from tests.integration import procs

DATA = ROOT.parent / "shared" / "data" / "isbi2012_membrane"

pytestmark = pytest.mark.skipif(
    not (DATA / "image").is_dir(), reason=f"the ISBI-2012 slices are not at {DATA}"
)


def tiny_copy(tmp_path: Path) -> Path:
    """The example with 3 evaluations of 1 epoch on few crops, the figure in ``tmp_path``."""
    text = (ROOT / "examples" / "unet_em.toml").read_text()
    example = tomllib.loads(text)
    assert [m["name"] for m in example["model"]] == ["unet", "shallow"]
    text = text.replace("budget = 24", "budget = 3").replace("epochs = 5", "epochs = 1")
    text = text.replace('data = "../shared/data/isbi2012_membrane"', f'data = "{DATA}"')
    text = text.replace('figure = "runs/unet_em.png"', f'figure = "{tmp_path / "em.png"}"')
    text = text.replace("scale = 4", "scale = 8\ncrops_per_slice = 1")
    path = tmp_path / "unet_em.toml"
    path.write_text(text)
    return path


def test_the_unet_example_runs_both_models_and_draws_the_figure(tmp_path: Path) -> None:
    db = tmp_path / "em.db"
    run = procs.cli(
        "run",
        str(tiny_copy(tmp_path)),
        "--db",
        str(db),
        env=python_env(),
        cwd=tmp_path,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    rows = query(db, "SELECT experiment, metrics FROM results ORDER BY experiment")
    assert sorted({r[0] for r in rows}) == ["unet-em.shallow", "unet-em.unet"]
    for _, metrics_json in rows:
        metrics = json.loads(metrics_json)
        for key in ("val_acc", "test_acc", "test_iou", "test_rand_error"):
            assert 0.0 <= metrics[key] <= 1.0, (key, metrics)
    stored = json.loads(query(db, "SELECT value FROM meta WHERE key = 'scheduling'")[0][0])
    assert stored["models"]["unet-em.unet"]["complexity"] > 100  # the seed's seven domains
    for model in ("unet", "shallow"):
        figure = tmp_path / f"em.{model}.png"
        assert figure.is_file(), run.stdout[-2000:]
        with Image.open(figure) as image:
            assert image.width > 2.5 * image.height  # four panels side by side, titles above
    best = procs.cli("best", "unet-em", "--db", str(db))
    assert best.returncode == 0, best.stderr
    assert "unet-em.unet" in best.stdout and "complexity" in best.stdout
    export = procs.cli("export", "unet-em", "--db", str(db), "--format", "csv")
    assert export.returncode == 0, export.stderr
    table = list(csv.DictReader(io.StringIO(export.stdout)))
    assert {r["model"] for r in table} == {"unet", "shallow"}
    assert all(float(r["model.complexity"]) > 100 for r in table)
