"""SHADHO over a real Mosquitto: two agents with different profiles, two models of different size.

The agents pretend their hardware (``--profile-override``): ``strong`` a fast GPU, ``weak`` a slow
CPU box. The complex model (a CNN space with many choices) must be assigned the fast class and
its trials must all run there; the simple model (one binary choice) runs on the slow class. A
daemon that placed work by free credits alone would spread both models over both agents.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from nasd.store.connection import open_reader
from nasd.store.queries import status
from tests.integration import procs

COMPLEX_SPACE = (
    'kind = "cnn"\ninput_shape = [1, 8, 8]\nnum_classes = 10\nmin_layers = 1\nmax_layers = 4\n'
    'kernels = [3, 5, 7]\nfilters = [16, 32, 64]\nstrides = [1, 2]\npools = ["none", "max"]\n'
    'head = "flatten"'
)
SIMPLE_SPACE = 'kind = "hparams"\n[space.params.width]\ntype = "categorical"\nchoices = [1, 2]'
STRONG = {"device_name": "Fake-GPU-9000", "samples_per_s": 50000, "free_memory_bytes": 8 << 30}
WEAK = {"device_name": "Fake-CPU-1", "samples_per_s": 200, "free_memory_bytes": 8 << 30}


def test_complex_model_runs_on_the_strong_agent(mosquitto: object, tmp_path: Path) -> None:
    url = mosquitto.url  # type: ignore[attr-defined]
    options = "seconds = 0.3"
    complex_file = procs.write_experiment(
        tmp_path / "complex.toml",
        "complex",
        12,
        trainer="zero",
        space=COMPLEX_SPACE,
        options=options,
    )
    simple_file = procs.write_experiment(
        tmp_path / "simple.toml",
        "simple",
        40,
        trainer="zero",
        space=SIMPLE_SPACE,
        options=options,
    )
    settings = tmp_path / "nasd.toml"
    settings.write_text(f'[daemon]\nbroker = "{url}"\ndb = "nasd.db"\n')
    db = tmp_path / "nasd.db"
    daemon = procs.start_daemon(settings, tmp_path / "daemon.log")
    agents = [
        procs.start_agent(url, "strong", tmp_path, profile=STRONG),
        procs.start_agent(url, "weak", tmp_path, profile=WEAK),
    ]
    logs = [tmp_path / name for name in ("daemon.log", "strong.log", "weak.log")]
    try:
        procs.wait_until(
            lambda: procs.query(db, "SELECT COUNT(*) FROM agents WHERE online = 1") == [(2,)],
            60,
            "both agents online",
            [daemon, *agents],
            logs,
        )
        # The simple model first: alone, it may use both classes; the complex model's arrival
        # re-assigns the classes before any of its trials is placed.
        for path in (simple_file, complex_file):
            submitted = procs.cli("submit", str(path), "--config", str(settings))
            assert submitted.returncode == 0, submitted.stderr
        procs.wait_until(
            lambda: procs.count_results(db, "complex") >= 3,
            120,
            "3 results of the complex model",
            [daemon, *agents],
            logs,
        )
        with contextlib.closing(open_reader(db)) as conn:
            picture = status(conn)  # while both models run
        procs.wait_until(
            lambda: procs.count_results(db, "complex") >= 12,
            120,
            "12 results of the complex model",
            [daemon, *agents],
            logs,
        )
    finally:
        for agent in agents:
            assert procs.stop(agent) == 0
        assert procs.stop(daemon) == 0
    ran_on = procs.query(db, "SELECT DISTINCT agent FROM results WHERE experiment = 'complex'")
    assert ran_on == [("strong",)]
    scheduling = picture["scheduling"]
    classes = {c["name"]: c for c in scheduling["classes"]}
    assert classes["Fake-GPU-9000"]["agents"] == ["strong"]
    assert classes["Fake-CPU-1"]["agents"] == ["weak"]
    assert scheduling["classes"][0]["name"] == "Fake-GPU-9000"  # fastest first
    models = scheduling["models"]
    assert models["complex"]["classes"] == ["Fake-GPU-9000"]
    assert models["simple"]["classes"] == ["Fake-CPU-1"]
    assert models["complex"]["complexity"] > models["simple"]["complexity"] == 1.5
    by_agent = {a["name"]: a for a in picture["agents"]}
    assert by_agent["strong"]["class"] == "Fake-GPU-9000"
    stored = json.loads(procs.query(db, "SELECT value FROM meta WHERE key = 'scheduling'")[0][0])
    assert stored["models"]["complex"]["classes"] == []  # done: it holds no class any more
    assert stored["models"]["complex"]["priority"] > 0
