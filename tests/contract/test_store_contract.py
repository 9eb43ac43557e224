"""The store's contract: what the engine writes through ``repo``, ``recovery`` reads back.

Run unchanged against a real database file (``open_writer``: WAL, ``synchronous=FULL``) and the
in-memory database the engine's unit tests may use (``open_memory``), so both stay equivalent.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nasd.store import open_memory, open_writer, queries, recovery, repo

Opener = Callable[[Path], sqlite3.Connection]

CONFIG = (
    '{"experiment": {"budget": 4, "name": "exp"}, "space": {"kind": "nb201"},'
    ' "strategy": {"name": "random", "metric": "loss", "mode": "min"}, "task": {"trainer": "zero"}}'
)


@pytest.fixture(params=["file", "memory"])
def conn(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sqlite3.Connection]:
    opener: Opener = (
        (lambda p: open_writer(p / "nasd.db"))
        if request.param == "file"
        else (lambda _: open_memory())
    )
    connection = opener(tmp_path)
    yield connection
    connection.close()


def propose(conn: sqlite3.Connection, *trial_ids: int, now: float = 1.0) -> None:
    repo.insert_trials(
        conn,
        [
            repo.trial_row(f"exp:{i}", "exp", i, {"ops": [i]}, None, [], None, "pending", now)
            for i in trial_ids
        ],
    )


def test_an_experiment_and_its_event_log_come_back_in_order(conn: sqlite3.Connection) -> None:
    repo.insert_experiment(conn, "exp", CONFIG, "running", 1.0)
    seqs = [repo.append_event(conn, "exp", "slots_open", {"trial_ids": [i]}, 2.0) for i in range(3)]
    assert seqs == sorted(seqs)
    (stored,) = recovery.experiments(conn)
    assert (stored.name, stored.status, stored.config["strategy"]["mode"]) == (
        "exp",
        "running",
        "min",
    )
    after_first = list(recovery.events_after(conn, "exp", seqs[0]))
    assert after_first == [
        (s, "slots_open", {"trial_ids": [i]}) for s, i in zip(seqs[1:], (1, 2), strict=True)
    ]
    repo.set_experiment_status(conn, "exp", "paused")
    repo.set_experiment_config(conn, "exp", CONFIG.replace('"budget": 4', '"budget": 9'))
    (stored,) = recovery.experiments(conn)
    assert (stored.status, stored.config["experiment"]["budget"]) == ("paused", 9)


def test_snapshots_replace_each_other(conn: sqlite3.Connection) -> None:
    assert recovery.snapshot(conn, "exp") is None
    repo.save_snapshot(conn, "exp", 5, {"rng": [1, [2], None]}, 1.0)
    repo.save_snapshot(conn, "exp", 9, {"rng": [3, [4], None], "x": b"raw"}, 2.0)
    assert recovery.snapshot(conn, "exp") == (9, {"rng": [3, [4], None], "x": b"raw"})


def test_unfinished_trials_carry_their_lease_history_and_proposal_order(
    conn: sqlite3.Connection,
) -> None:
    propose(conn, 0, 1, 2, 3)
    repo.assign_trial(conn, "exp:1", 1, "a", 2.0)
    repo.end_lease(conn, "exp:1", 1, "expired", 3.0)
    repo.requeue_trial(conn, "exp:1", 1, "lease expired")
    repo.assign_trial(conn, "exp:1", 2, "b", 4.0)
    repo.insert_result(conn, "exp:0", "exp", 0, "a", 1, {"loss": 0.5}, None, 1.0, 2.0, 5.0)
    repo.cancel_trial(conn, "exp:3", 6.0)
    rows = recovery.unfinished_trials(conn)
    assert [(t.job_id, t.status, t.epoch, t.agent, t.attempts) for t in rows] == [
        ("exp:1", "running", 2, "b", 1),
        ("exp:2", "pending", 0, None, 0),
    ]
    assert rows[0].leases == {1: "a", 2: "b"} and rows[1].leases == {}
    assert rows[0].genotype == {"ops": [1]} and rows[0].morphisms == []
    counts = recovery.trial_counts(conn, "exp")
    assert counts == recovery.TrialCounts(next_trial_id=4, succeeded=1, failed=0, cancelled=1)
    assert repo.trial_exists(conn, "exp:3") and not repo.trial_exists(conn, "exp:7")


def test_a_result_is_stored_once_and_results_come_back_in_arrival_order(
    conn: sqlite3.Connection,
) -> None:
    repo.insert_experiment(conn, "exp", CONFIG, "running", 1.0)
    propose(conn, 0, 1, 2)
    for trial_id, loss in ((2, 0.3), (0, 0.3), (1, 0.9)):
        assert repo.insert_result(
            conn, f"exp:{trial_id}", "exp", trial_id, "a", 1, {"loss": loss}, None, 1.0, 2.0, 3.0
        )
    assert not repo.insert_result(conn, "exp:2", "exp", 2, "b", 2, {"loss": 0.0}, None, 1, 2, 3)
    assert list(recovery.results(conn, "exp")) == [
        (2, {"loss": 0.3}),
        (0, {"loss": 0.3}),
        (1, {"loss": 0.9}),
    ]
    # The read side ranks with the same objective (minimise loss) and the same tie rule.
    best = queries.best_trial(conn, "exp")
    assert best is not None and (best["trial_id"], best["value"]) == (2, 0.3)


def test_agents_remember_slots_and_draining_until_they_speak_again(
    conn: sqlite3.Connection,
) -> None:
    repo.upsert_agent(conn, "a", {"device": "cpu"}, 3, True, 1.0)
    repo.set_agent_draining(conn, "a", True)
    assert [(a.name, a.slots, a.last_seen) for a in recovery.agents(conn)] == [("a", 3, 1.0)]
    (summary,) = queries.agent_summaries(conn)
    assert (summary["slots"], summary["draining"], summary["device"]) == (3, True, "cpu")
    repo.upsert_agent(conn, "a", None, None, True, 2.0)  # ready: profile and slots kept
    (summary,) = queries.agent_summaries(conn)
    assert (summary["slots"], summary["draining"], summary["device"]) == (3, False, "cpu")


def test_agent_trust_survives_and_a_deleted_agent_is_gone(conn: sqlite3.Connection) -> None:
    repo.upsert_agent(conn, "a", {"device": "cpu", "trainers": ["zero"]}, 2, True, 1.0)
    repo.upsert_agent(conn, "b", {"device": "cpu", "trainers": ["other"]}, 1, True, 1.0)
    repo.set_agent_trust(conn, "a", 3, 2, 500.0)
    (a, b) = recovery.agents(conn)
    assert (a.strikes, a.quarantines, a.quarantined_until) == (3, 2, 500.0)
    assert (b.strikes, b.quarantines, b.quarantined_until) == (0, 0, 0.0)
    summary = {s["name"]: s for s in queries.agent_summaries(conn)}
    assert (summary["a"]["strikes"], summary["a"]["quarantined_until"]) == (3, 500.0)
    assert queries.online_trainers(conn) == {"zero", "other"}
    repo.delete_agent(conn, "b")
    assert [s.name for s in recovery.agents(conn)] == ["a"]


def test_a_lease_holder_is_known_for_every_epoch_ever_issued(conn: sqlite3.Connection) -> None:
    propose(conn, 0)
    repo.assign_trial(conn, "exp:0", 1, "a", 2.0)
    repo.end_lease(conn, "exp:0", 1, "expired", 3.0)
    repo.assign_trial(conn, "exp:0", 2, "b", 4.0)
    assert [repo.lease_holder(conn, "exp:0", e) for e in (1, 2, 3)] == ["a", "b", None]
    assert repo.lease_holder(conn, "exp:9", 1) is None


def test_m004_drops_rows_of_agents_never_born_unless_they_hold_a_lease(tmp_path: Path) -> None:
    from sqlite_utils import Database

    from nasd.store.schema import migrations

    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    migrations.apply(Database(conn), stop_before="m004_agent_trust")
    for name, profile in (("born", '{"device": "cpu"}'), ("ghost", "{}"), ("holder", "{}")):
        conn.execute(
            "INSERT INTO agents (name, profile, slots, online, first_seen, last_seen)"
            " VALUES (?, ?, 1, 0, 1.0, 1.0)",
            (name, profile),
        )
    conn.execute(
        "INSERT INTO leases (job_id, epoch, agent, assigned_at, status)"
        " VALUES ('exp:0', 1, 'holder', 1.0, 'active')"
    )
    migrations.apply(Database(conn))
    assert [(a.name, a.strikes, a.quarantined_until) for a in recovery.agents(conn)] == [
        ("born", 0, 0.0),
        ("holder", 0, 0.0),
    ]
    conn.close()
