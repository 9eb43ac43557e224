"""``nasd backup`` / ``nasd restore`` on real files: consistent while written, checked, atomic."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nasd.cli import main
from nasd.errors import StoreError
from nasd.store import backup as backup_module
from nasd.store import open_reader, open_writer
from nasd.store.backup import backup, in_use, restore
from nasd.store.connection import APPLICATION_ID

WRITER = """
import sys, time
from nasd.store import open_writer
conn = open_writer(sys.argv[1])
print("ready", flush=True)
i = 0
while True:  # pairs in one transaction: a consistent copy has as many events as trials
    i += 1
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "INSERT INTO trials (job_id, experiment, trial_id, genotype, status, created_at)"
        " VALUES (?, 'exp', ?, ?, 'pending', 0)", (f"exp:{i}", i, "x" * 2000)
    )
    conn.execute(
        "INSERT INTO events (experiment, kind, body, at) VALUES ('exp', 'slots_open', ?, 0)",
        (b"y" * 2000,),
    )
    conn.execute("COMMIT")
"""


def _counts(path: Path) -> tuple[int, int]:
    conn = open_reader(path)
    try:
        trials = conn.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
        events = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    finally:
        conn.close()
    return trials, events


def _seed(path: Path, rows: int) -> None:
    conn = open_writer(path)
    conn.execute("BEGIN")
    for i in range(rows):
        conn.execute(
            "INSERT INTO trials (job_id, experiment, trial_id, genotype, status, created_at)"
            " VALUES (?, 'exp', ?, ?, 'pending', 0)",
            (f"seed:{i}", -1 - i, "s" * 2000),
        )
        conn.execute(
            "INSERT INTO events (experiment, kind, body, at) VALUES ('exp', 'seed', ?, 0)",
            (b"s" * 2000,),
        )
    conn.execute("COMMIT")
    conn.close()


def test_a_backup_taken_while_another_process_commits_is_one_consistent_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, out = tmp_path / "live.db", tmp_path / "copy.db"
    _seed(db, 400)  # ~400 pages: with one page per step the copy spans many foreign commits
    monkeypatch.setattr(backup_module, "STEP_PAGES", 4)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        during: list[int] = []

        def progress(done: int, total: int) -> None:
            during.append(done)
            time.sleep(0.002)  # let the writer commit between steps

        started = _counts(db)[0]
        copied = backup(db, out, progress=progress)
        ended = _counts(db)[0]
    finally:
        writer.kill()
        writer.wait()
    assert ended > started  # the writer really committed while the copy was made
    assert len(during) > 10 and during == sorted(during)
    trials, events = _counts(out)
    assert trials == events >= 400  # one snapshot: never a trial without its event
    conn = sqlite3.connect(out)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)  # self-contained
    assert conn.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)
    conn.close()
    assert copied.path == out and copied.bytes == out.stat().st_size
    assert not list(tmp_path.glob(".*tmp"))


def test_backup_refuses_to_overwrite_without_force_and_other_files(tmp_path: Path) -> None:
    db, out = tmp_path / "n.db", tmp_path / "b.db"
    _seed(db, 3)
    out.write_text("precious")
    with pytest.raises(StoreError, match="--force"):
        backup(db, out)
    assert out.read_text() == "precious"
    backup(db, out, force=True)
    assert _counts(out) == (3, 3)
    with pytest.raises(StoreError, match="database itself"):
        backup(db, db, force=True)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE notes (x)").connection.close()
    with pytest.raises(StoreError, match="not a nasd database"):
        backup(other, tmp_path / "c.db")
    assert not (tmp_path / "c.db").exists()


def test_restore_checks_the_backup_and_refuses_damaged_or_foreign_files(tmp_path: Path) -> None:
    db, good = tmp_path / "n.db", tmp_path / "good.db"
    _seed(db, 200)
    backup(db, good)
    damaged = tmp_path / "damaged.db"
    data = bytearray(good.read_bytes())
    page = 4096
    data[page * 40 : page * 40 + 200] = b"\xff" * 200  # scribble over a b-tree page
    damaged.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=r"damaged|malformed|not a SQLite"):
        restore(damaged, tmp_path / "r.db")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(StoreError, match="not a SQLite database"):
        restore(notes, tmp_path / "r.db")
    assert not (tmp_path / "r.db").exists()
    restore(good, tmp_path / "r.db")
    assert _counts(tmp_path / "r.db") == (200, 200)


def test_restore_refuses_a_database_in_use_and_to_overwrite_without_force(tmp_path: Path) -> None:
    live, saved = tmp_path / "live.db", tmp_path / "saved.db"
    _seed(live, 5)
    backup(live, saved)
    with pytest.raises(StoreError, match="--force"):
        restore(saved, live)
    daemon = open_writer(live)  # the daemon's writer connection, idle between transactions
    try:
        assert in_use(live)
        with pytest.raises(StoreError, match="open in another process"):
            restore(saved, live, force=True)
    finally:
        daemon.close()
    assert not in_use(live)


def test_restore_replaces_the_database_and_drops_its_stale_wal(tmp_path: Path) -> None:
    live, saved = tmp_path / "live.db", tmp_path / "saved.db"
    _seed(live, 5)
    backup(live, saved)
    # the old database goes on, then its process dies and leaves a WAL full of later commits
    crashed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sys\nfrom nasd.store import open_writer\nc = open_writer(sys.argv[1])\n"
            "c.execute('PRAGMA wal_autocheckpoint = 0')\n"
            'c.execute("DELETE FROM trials")\nos._exit(0)',
            str(live),
        ],
        timeout=60,
        check=False,
    )
    assert crashed.returncode == 0
    assert (tmp_path / "live.db-wal").stat().st_size > 0
    restore(saved, live, force=True)
    assert not (tmp_path / "live.db-wal").exists()
    assert _counts(live) == (5, 5)  # the old WAL was not replayed over the restored file
    open_writer(live).close()  # and the daemon can take it from here
    assert _counts(live) == (5, 5)


def test_the_cli_backs_up_and_restores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "n.db"
    _seed(db, 4)
    out = tmp_path / "b.db"
    assert main(["backup", "--db", str(db), "--out", str(out)]) == 0
    assert "integrity ok" in capsys.readouterr().out
    assert main(["backup", "--db", str(db), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["restore", str(out), "--db", str(tmp_path / "r.db")]) == 0
    assert _counts(tmp_path / "r.db") == (4, 4)
    assert main(["restore", str(tmp_path / "missing.db"), "--db", str(tmp_path / "s.db")]) == 2
    assert "no database" in capsys.readouterr().err


def test_large_backups_report_progress_on_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from nasd.cli import ops

    db = tmp_path / "n.db"
    _seed(db, 100)
    monkeypatch.setattr(ops, "PROGRESS_MIN_BYTES", 0)  # every database counts as large
    monkeypatch.setattr(backup_module, "STEP_PAGES", 8)
    assert main(["backup", "--db", str(db), "--out", str(tmp_path / "b.db")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) >= 3 and err[-1].startswith("nasd backup: 100% of")
    assert all(line.startswith("nasd backup: ") for line in err)
