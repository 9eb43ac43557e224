"""The engine's crash points (``nasd.faults``): a process that dies there loses nothing committed.

Each test runs the engine in a child process with ``NASD_CRASH_AT`` set, checks that it died at
that point (exit status 86), then reopens the same database file here and carries on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from nasd.engine import Inbound, rebuild
from nasd.faults import CRASH_EXIT_CODE
from tests.unit.engine_harness import Harness, of_type, view

ROOT = Path(__file__).resolve().parents[2]


def run_child(db: Path, crash_at: str, body: str) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(
        """
        from pathlib import Path
        from nasd.engine import Inbound
        from tests.unit.engine_harness import Harness, assigns, config
        h = Harness(Path({db!r}))
        """
    ).format(db=str(db)) + textwrap.dedent(body)
    env = {**os.environ, "NASD_CRASH_AT": crash_at, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_crash_before_the_result_insert_loses_it_and_the_resent_result_counts_once(
    tmp_path: Path,
) -> None:
    db = tmp_path / "nasd.db"
    child = run_child(
        db,
        "result.before_insert",
        """
        h.submit(config(budget=1))
        job = assigns(h.online("a", slots=1))[0]
        print(job["token"], flush=True)
        h.apply(Inbound("trial.result", "a", h.result(job["job_id"], job["epoch"])))
        raise SystemExit("the crash point was not reached")
        """,
    )
    assert child.returncode == CRASH_EXIT_CODE, child.stderr
    assert "crash point result.before_insert" in child.stderr
    token = child.stdout.split()[-1]
    h = Harness(db)
    try:
        assert h.query("PRAGMA integrity_check") == [("ok",)]
        assert h.query("SELECT COUNT(*) FROM results") == [(0,)]
        assert h.query("SELECT status, epoch, agent FROM trials") == [("running", 1, "a")]
        assert h.token("exp:0", 1) == token  # the secret survived: the spooled result is valid
        h.online("a", slots=1)
        out = h.apply(Inbound("trial.result", "a", h.result("exp:0", 1)))
        assert [m.body["token"] for m in of_type(out, "trial.ack")] == [token]
        assert h.query("SELECT COUNT(*) FROM results") == [(1,)]
        assert h.engine.experiments["exp"].status == "done"
    finally:
        h.writer.close()


def test_a_crash_between_two_snapshots_leaves_a_database_that_rebuilds(tmp_path: Path) -> None:
    db = tmp_path / "nasd.db"
    child = run_child(
        db,
        "snapshot.middle",
        """
        h.submit(config(name="one", budget=4))
        h.submit(config(name="two", budget=4, strategy="aging-evolution"))
        h.online("a", slots=4)
        h.writer.run_sync(lambda c: h.engine.snapshot_all(c, h.now))
        raise SystemExit("the crash point was not reached")
        """,
    )
    assert child.returncode == CRASH_EXIT_CODE, child.stderr
    h = Harness(db)
    try:
        assert h.query("PRAGMA integrity_check") == [("ok",)]
        assert h.query("SELECT COUNT(*) FROM snapshots") == [(0,)]  # one transaction: none
        assert len(h.engine.assignments_to_resend()) == 4  # the leases committed before
        h.writer.run_sync(lambda c: h.engine.snapshot_all(c, h.now))
        assert h.query("SELECT experiment FROM snapshots ORDER BY experiment") == [
            ("one",),
            ("two",),
        ]
        assert view(h.writer.run_sync(lambda c: rebuild(c, h.now))) == view(h.engine)
    finally:
        h.writer.close()
