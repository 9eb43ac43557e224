"""The agent's result spool (agents.spool.Spool): what it keeps, in what order, across restarts.

A result must survive until the daemon acknowledges it, including a killed agent process, and a
reader must only ever see whole payloads: the spool either has a result or it does not. Results are
kept per lease, ``(job_id, epoch)``, with the lease's token: only an ack matching all three removes
one. A file from an older agent is migrated when empty and refused when it holds results.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from agents.spool import LAYOUT_VERSION, Spool, SpoolError
from nasd.errors import ConfigError

pytestmark = pytest.mark.timeout(60)

T1, T2 = "1" * 32, "2" * 32
"""Two lease tokens."""


def test_put_get_remove_and_len(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    try:
        assert spool.get("exp:1", 1) is None and len(spool) == 0
        spool.put("exp:1", 1, T1, b"\x00first\xff")
        spool.put("exp:2", 1, T1, b"second")
        assert spool.get("exp:1", 1) == b"\x00first\xff"  # bytes come back exactly
        assert isinstance(spool.get("exp:2", 1), bytes) and len(spool) == 2
        spool.remove("exp:1", 1, T1)
        assert spool.get("exp:1", 1) is None and len(spool) == 1
        spool.remove("exp:1", 1, T1)  # acks may arrive twice
        spool.remove("never:0", 1, T1)
        assert list(spool.items()) == [b"second"]
    finally:
        spool.close()


def test_put_again_replaces_the_payload(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    try:
        spool.put("exp:1", 1, T1, b"old")
        spool.put("exp:1", 1, T1, b"new")
        assert spool.get("exp:1", 1) == b"new"
        assert list(spool.items()) == [b"new"] and len(spool) == 1
    finally:
        spool.close()


def test_items_come_oldest_first(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    try:
        names = ["exp:9", "exp:1", "exp:5", "other:0", "exp:2"]  # not sorted by name
        for name in names:
            spool.put(name, 1, T1, name.encode())
        assert list(spool.items()) == [n.encode() for n in names]
        spool.remove("exp:5", 1, T1)
        spool.put("exp:7", 1, T1, b"exp:7")
        assert list(spool.items()) == [b"exp:9", b"exp:1", b"other:0", b"exp:2", b"exp:7"]
    finally:
        spool.close()


def test_results_are_kept_per_epoch_and_removed_only_by_a_matching_ack(tmp_path: Path) -> None:
    """Defect 7: an ack for epoch 1 must never delete the epoch-2 result of the same job."""
    spool = Spool(tmp_path)
    try:
        spool.put("exp:1", 1, T1, b"epoch one")
        spool.put("exp:1", 2, T2, b"epoch two")
        assert spool.get("exp:1", 1) == b"epoch one" and spool.get("exp:1", 2) == b"epoch two"
        assert spool.epochs("exp:1") == [1, 2] and spool.epochs("exp:9") == []
        assert spool.token("exp:1", 2) == T2 and spool.token("exp:1", 3) is None
        assert spool.remove("exp:1", 1, T2) is False  # epoch 1 with epoch 2's token
        assert spool.remove("exp:1", 2, T1) is False  # epoch 2 with epoch 1's token
        assert spool.remove("exp:1", 3, T2) is False
        assert len(spool) == 2
        assert spool.remove("exp:1", 1, T1) is True
        assert spool.get("exp:1", 1) is None and spool.get("exp:1", 2) == b"epoch two"
        assert spool.remove("exp:1", 1, T1) is False  # a duplicate ack
        assert list(spool.items()) == [b"epoch two"]
    finally:
        spool.close()


def _old_spool(directory: Path, rows: list[tuple[str, bytes, int]]) -> None:
    """A spool file as the agent before lease tokens wrote it: keyed by job id, no epoch."""
    directory.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(directory / "spool.db")
    with conn:
        conn.execute(
            "CREATE TABLE results (job_id TEXT PRIMARY KEY, payload BLOB NOT NULL,"
            " seq INTEGER NOT NULL)"
        )
        conn.executemany("INSERT INTO results VALUES (?, ?, ?)", rows)
    conn.close()


def test_an_empty_spool_of_the_old_layout_is_migrated(tmp_path: Path) -> None:
    _old_spool(tmp_path, [])
    spool = Spool(tmp_path)
    try:
        spool.put("exp:1", 2, T2, b"new")
        assert spool.get("exp:1", 2) == b"new" and spool.epochs("exp:1") == [2]
    finally:
        spool.close()
    conn = sqlite3.connect(tmp_path / "spool.db")
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LAYOUT_VERSION
        columns = [row[1] for row in conn.execute("PRAGMA table_info(results)")]
        assert columns == ["job_id", "epoch", "token", "payload", "seq"]
    finally:
        conn.close()


def test_an_old_spool_holding_results_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    """Its results carry no lease token, so no current daemon could ever acknowledge them."""
    _old_spool(tmp_path, [("exp:1", b"one", 1), ("exp:2", b"two", 2)])
    with pytest.raises(SpoolError) as refused:
        Spool(tmp_path)
    message = str(refused.value)
    assert isinstance(refused.value, ConfigError)  # the agent's CLI: one line, exit 2
    assert "2 unacknowledged result(s) from an older nasd-agent" in message
    assert str(tmp_path / "spool.db") in message and "Move the file away" in message
    conn = sqlite3.connect(tmp_path / "spool.db")
    try:
        assert conn.execute("SELECT job_id, payload FROM results ORDER BY seq").fetchall() == [
            ("exp:1", b"one"),
            ("exp:2", b"two"),
        ]
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    finally:
        conn.close()


def test_files_that_are_not_a_spool_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "spool.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(SpoolError, match="not a usable spool file"):
        Spool(garbage)

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    conn = sqlite3.connect(foreign / "spool.db")
    conn.execute("CREATE TABLE results (name TEXT, score REAL)")
    conn.commit()
    conn.close()
    with pytest.raises(SpoolError, match="not a nasd-agent spool"):
        Spool(foreign)

    newer = tmp_path / "newer"
    newer.mkdir()
    conn = sqlite3.connect(newer / "spool.db")
    conn.execute(f"PRAGMA user_version = {LAYOUT_VERSION + 1}")
    conn.close()
    with pytest.raises(SpoolError, match="newer nasd-agent"):
        Spool(newer)


def test_the_directory_is_created(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "b"
    Spool(directory).close()
    assert directory.is_dir()


def test_results_survive_a_reopen_from_the_same_directory(tmp_path: Path) -> None:
    first = Spool(tmp_path)
    first.put("exp:1", 1, T1, b"one")
    first.put("exp:2", 1, T1, b"two")
    first.put("exp:3", 1, T1, b"three")
    first.remove("exp:2", 1, T1)
    first.close()
    again = Spool(tmp_path)
    try:
        assert list(again.items()) == [b"one", b"three"]
        assert again.get("exp:3", 1) == b"three" and again.get("exp:2", 1) is None
        again.put("exp:4", 1, T1, b"four")  # new results still queue behind the old ones
        assert list(again.items()) == [b"one", b"three", b"four"]
    finally:
        again.close()


def _payload(index: int, size: int) -> bytes:
    """A payload that carries its own checksum, so a torn one is recognisable."""
    body = (b"%08d" % index) * (size // 8)
    return hashlib.sha256(body).digest() + body


def _whole(payload: bytes) -> bool:
    return hashlib.sha256(payload[32:]).digest() == payload[:32]


_WRITER = textwrap.dedent(
    """
    import sys
    from agents.spool import Spool
    from tests.unit.test_spool import _payload

    spool = Spool(sys.argv[1])
    print("open", flush=True)
    index = 0
    while True:
        spool.put(f"exp:{index}", 1, "0" * 32, _payload(index, 256 * 1024))
        index += 1
    """
)


def test_a_killed_writer_leaves_only_whole_results(tmp_path: Path) -> None:
    """SIGKILL mid-write: on reopen every listed result is complete and earlier ones are kept."""
    root = Path(__file__).resolve().parents[2]
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path)],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        stdout=subprocess.PIPE,
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline() == b"open\n"
        deadline = time.monotonic() + 20
        while not (tmp_path / "spool.db-wal").exists() or _count(tmp_path) < 5:
            assert time.monotonic() < deadline, "the writer never got going"
            time.sleep(0.02)
        time.sleep(0.05)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    spool = Spool(tmp_path)
    try:
        payloads = list(spool.items())
        assert len(payloads) >= 5 and len(payloads) == len(spool)
        assert all(_whole(p) for p in payloads)
        # Nothing skipped: puts commit in order, so the survivors are exactly the first N.
        assert [p[32:40] for p in payloads] == [b"%08d" % i for i in range(len(payloads))]
    finally:
        spool.close()


def _count(directory: Path) -> int:
    spool = Spool(directory)
    try:
        return len(spool)
    finally:
        spool.close()


def test_a_concurrent_reader_never_sees_a_partial_result(tmp_path: Path) -> None:
    """Another connection on the same directory (an agent restarting) sees whole puts or none."""
    writer = Spool(tmp_path)
    done = threading.Event()
    seen: list[bytes] = []
    errors: list[BaseException] = []

    reading = threading.Event()

    def read() -> None:
        reader = Spool(tmp_path)
        try:
            while True:  # at least once after the last put, however the threads are scheduled
                finished = done.is_set()
                seen.extend(reader.items())
                reading.set()
                if finished:
                    break
        except BaseException as exc:  # reported below; a thread cannot fail the test itself
            errors.append(exc)
        finally:
            reader.close()

    thread = threading.Thread(target=read)
    thread.start()
    reading.wait(30)  # the reader is under way before the writer starts
    try:
        for index in range(40):
            writer.put(f"exp:{index}", 1, T1, _payload(index, 128 * 1024))
    finally:
        done.set()
        thread.join(30)
        writer.close()
    assert not errors, errors
    assert seen, "the reader never saw a result"
    assert all(_whole(p) for p in seen)
