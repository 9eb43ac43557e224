"""The store's start-up guarantees and the config loader's error messages."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from nasd.config import load_daemon_settings, load_experiment, load_experiments
from nasd.errors import ConfigError, StoreError
from nasd.mqtt import BrokerUrl
from nasd.store import open_reader, open_writer

ROOT = Path(__file__).resolve().parents[2]


def test_writer_settings_are_asserted_and_migrations_are_idempotent(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    conn = open_writer(db)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute("PRAGMA synchronous").fetchone() == (2,)
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"experiments", "events", "trials", "results", "leases", "agents", "snapshots"} <= tables
    applied = conn.execute("SELECT COUNT(*) FROM _sqlite_migrations").fetchone()
    assert applied[0] >= 3  # m001 ... m003 at least; later migrations add rows
    conn.close()
    again = open_writer(db)  # a second start applies nothing twice
    assert again.execute("SELECT COUNT(*) FROM _sqlite_migrations").fetchone() == applied
    again.close()


def test_reader_is_read_only_and_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    open_writer(tmp_path / "a.db").close()
    reader = open_reader(tmp_path / "a.db")
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.execute("DELETE FROM trials")
    with pytest.raises(StoreError, match="no database"):
        open_reader(tmp_path / "missing.db")


def test_a_directory_as_database_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        open_writer(tmp_path)


@pytest.mark.parametrize("name", ["mnist1d.toml", "digits.toml", "nb201.toml"])
def test_examples_are_valid(name: str) -> None:
    config = load_experiment(ROOT / "examples" / name)
    assert config.budget > 0


@pytest.mark.parametrize(
    "path", sorted((ROOT / "examples").glob("*.toml")), ids=lambda path: path.name
)
def test_every_example_loads_with_the_multi_model_loader(path: Path) -> None:
    configs = load_experiments(path)
    assert configs and all(config.budget > 0 for config in configs)
    assert len({config.name for config in configs}) == len(configs)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[experiment\n", "not valid TOML"),
        (
            '[experiment]\nname = "x"\nbudget = 0\n[space]\nkind = "nb201"\n[strategy]\n'
            'name = "random"\n[task]\ntrainer = "zero"\n',
            "experiment.budget",
        ),
        (
            '[experiment]\nname = "x"\nbudget = 1\n[space]\nkind = "nb201"\n[strategy]\n'
            'name = "evolution"\n[task]\ntrainer = "zero"\n',
            "unknown strategy",
        ),
        (
            '[experiment]\nname = "x"\nbudget = 1\n[space]\nkind = "cnn"\n[strategy]\n'
            'name = "random"\n[task]\ntrainer = "zero"\n',
            "input_shape",
        ),
        (
            '[experiment]\nname = "x"\nbudget = 1\nbudgte = 2\n[space]\nkind = "nb201"\n'
            '[strategy]\nname = "random"\n[task]\ntrainer = "zero"\n',
            "budgte",
        ),
    ],
)
def test_experiment_errors_name_the_file_and_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "exp.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_experiment(path)
    assert str(path) in str(info.value)


def test_missing_experiment_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_experiment(tmp_path / "nope.toml")


def test_daemon_settings_resolve_paths_relative_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nasd.toml"
    path.write_text(
        '[daemon]\nbroker = "mqtts://u:p%40ss@host"\ndb = "state/n.db"\n'
        'experiments = ["exp.toml"]\n'
    )
    settings = load_daemon_settings(path)
    assert settings.db == str(tmp_path / "state" / "n.db")
    assert settings.experiments == (str(tmp_path / "exp.toml"),)
    broker = BrokerUrl.parse(settings.broker)
    assert (broker.host, broker.port, broker.tls, broker.password) == ("host", 8883, True, "p@ss")
    assert "p@ss" not in str(broker)
    path.write_text('[daemon]\nbrokr = "x"\n')
    with pytest.raises(ConfigError, match=r"unknown key daemon\.brokr"):
        load_daemon_settings(path)


@pytest.mark.parametrize("url", ["http://x", "mqtt://", "mqtt://h:99999", "x"])
def test_bad_broker_urls(url: str) -> None:
    with pytest.raises(ConfigError, match="broker URL"):
        BrokerUrl.parse(url)
