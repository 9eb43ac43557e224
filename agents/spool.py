"""The agent's result spool: results stay on local disk until the daemon acknowledges them.

One file per job holds the encoded ``trial.result`` payload, written atomically (temp file, fsync,
rename). After a reconnect, a daemon restart or an agent restart every spooled result is published
again; the daemon acknowledges duplicates, so resending is always safe.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class Spool:
    """A directory of pending results, keyed by job id."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, job_id: str) -> Path:
        return self.directory / (_UNSAFE.sub("_", job_id) + ".result")

    def put(self, job_id: str, payload: bytes) -> None:
        """Store (or replace) the encoded result of ``job_id`` durably."""
        path = self._path(job_id)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def get(self, job_id: str) -> bytes | None:
        """The spooled payload of ``job_id``, if any."""
        try:
            return self._path(job_id).read_bytes()
        except FileNotFoundError:
            return None

    def remove(self, job_id: str) -> None:
        """Forget ``job_id`` (its result was acknowledged)."""
        self._path(job_id).unlink(missing_ok=True)

    def items(self) -> Iterator[bytes]:
        """Every spooled payload, oldest first."""
        files = sorted(self.directory.glob("*.result"), key=lambda p: p.stat().st_mtime)
        for path in files:
            try:
                yield path.read_bytes()
            except FileNotFoundError:
                continue

    def __len__(self) -> int:
        return sum(1 for _ in self.directory.glob("*.result"))
