"""Lease expiry, kept in memory.

A lease's *identity* — ``(job_id, epoch, agent)`` — is durable (the ``leases`` table); its expiry is
not: heartbeats renew it many times a second across all agents, and writing each renewal would cost
more than the whole evaluation. After a restart every active lease simply gets a fresh TTL, which
only ever delays a reassignment, never loses or duplicates one.
"""

from __future__ import annotations

import heapq


class LeaseClock:
    """Expiry times of active leases, with cheap "what has expired by now" queries."""

    def __init__(self) -> None:
        self._expires: dict[str, tuple[int, float]] = {}
        self._heap: list[tuple[float, str, int]] = []

    def __len__(self) -> int:
        return len(self._expires)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._expires

    def start(self, job_id: str, epoch: int, expires_at: float) -> None:
        """Begin timing the lease ``(job_id, epoch)``; replaces any older epoch's timer."""
        self._expires[job_id] = (epoch, expires_at)
        heapq.heappush(self._heap, (expires_at, job_id, epoch))

    def renew(self, job_id: str, epoch: int, expires_at: float) -> bool:
        """Push the expiry of the current lease later; False if ``epoch`` is not current."""
        current = self._expires.get(job_id)
        if current is None or current[0] != epoch:
            return False
        if expires_at > current[1]:
            self._expires[job_id] = (epoch, expires_at)
            heapq.heappush(self._heap, (expires_at, job_id, epoch))
        return True

    def stop(self, job_id: str) -> None:
        """Forget the lease of ``job_id`` (it ended)."""
        self._expires.pop(job_id, None)

    def expired(self, now: float) -> list[tuple[str, int]]:
        """Pop and return ``(job_id, epoch)`` of every lease whose expiry is ``<= now``."""
        out: list[tuple[str, int]] = []
        while self._heap and self._heap[0][0] <= now:
            expires_at, job_id, epoch = heapq.heappop(self._heap)
            current = self._expires.get(job_id)
            if current is not None and current == (epoch, expires_at):
                del self._expires[job_id]
                out.append((job_id, epoch))
        return out
