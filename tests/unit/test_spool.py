"""The agent's result spool (agents.spool.Spool): what it keeps, in what order, across restarts.

A result must survive until the daemon acknowledges it, including a killed agent process, and a
reader must only ever see whole payloads: the spool either has a result or it does not.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from agents.spool import Spool

pytestmark = pytest.mark.timeout(60)


def test_put_get_remove_and_len(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    try:
        assert spool.get("exp:1") is None and len(spool) == 0
        spool.put("exp:1", b"\x00first\xff")
        spool.put("exp:2", b"second")
        assert spool.get("exp:1") == b"\x00first\xff"  # bytes come back exactly
        assert isinstance(spool.get("exp:2"), bytes) and len(spool) == 2
        spool.remove("exp:1")
        assert spool.get("exp:1") is None and len(spool) == 1
        spool.remove("exp:1")  # acks may arrive twice
        spool.remove("never:0")
        assert list(spool.items()) == [b"second"]
    finally:
        spool.close()


def test_put_again_replaces_the_payload(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    try:
        spool.put("exp:1", b"old")
        spool.put("exp:1", b"new")
        assert spool.get("exp:1") == b"new"
        assert list(spool.items()) == [b"new"] and len(spool) == 1
    finally:
        spool.close()


def test_items_come_oldest_first(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    try:
        names = ["exp:9", "exp:1", "exp:5", "other:0", "exp:2"]  # not sorted by name
        for name in names:
            spool.put(name, name.encode())
        assert list(spool.items()) == [n.encode() for n in names]
        spool.remove("exp:5")
        spool.put("exp:7", b"exp:7")
        assert list(spool.items()) == [b"exp:9", b"exp:1", b"other:0", b"exp:2", b"exp:7"]
    finally:
        spool.close()


def test_the_directory_is_created(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "b"
    Spool(directory).close()
    assert directory.is_dir()


def test_results_survive_a_reopen_from_the_same_directory(tmp_path: Path) -> None:
    first = Spool(tmp_path)
    first.put("exp:1", b"one")
    first.put("exp:2", b"two")
    first.put("exp:3", b"three")
    first.remove("exp:2")
    first.close()
    again = Spool(tmp_path)
    try:
        assert list(again.items()) == [b"one", b"three"]
        assert again.get("exp:3") == b"three" and again.get("exp:2") is None
        again.put("exp:4", b"four")  # new results still queue behind the old ones
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
        spool.put(f"exp:{index}", _payload(index, 256 * 1024))
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

    def read() -> None:
        reader = Spool(tmp_path)
        try:
            while not done.is_set():
                seen.extend(reader.items())
        except BaseException as exc:  # reported below; a thread cannot fail the test itself
            errors.append(exc)
        finally:
            reader.close()

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for index in range(40):
            writer.put(f"exp:{index}", _payload(index, 128 * 1024))
    finally:
        done.set()
        thread.join(30)
        writer.close()
    assert not errors, errors
    assert seen, "the reader never saw a result"
    assert all(_whole(p) for p in seen)
