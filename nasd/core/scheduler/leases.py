"""Lease expiry, kept in memory.

A lease's *identity* — ``(job_id, epoch, agent)`` — is durable (the ``leases`` table); its expiry is
not: heartbeats renew it many times a second across all agents, and writing each renewal would cost
more than the whole evaluation. After a restart every active lease simply gets a fresh TTL, which
only ever delays a reassignment, never loses or duplicates one.

The timers are a heap of ``(expires_at, job_id, epoch)`` beside a dict of each lease's true expiry.
A renewal only updates the dict: a lease renewed 200,000 times still has one heap entry. When an
entry pops before the lease's true expiry, it goes back in at that time (lazily, once per pop).
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

    @property
    def timer_entries(self) -> int:
        """Entries in the timer heap (at most one per lease started since its last pop)."""
        return len(self._heap)

    def expires_at(self, job_id: str) -> float | None:
        """When the current lease of ``job_id`` runs out; None if it has none."""
        current = self._expires.get(job_id)
        return None if current is None else current[1]

    def start(self, job_id: str, epoch: int, expires_at: float) -> None:
        """Begin timing the lease ``(job_id, epoch)``; replaces any older epoch's timer."""
        self._expires[job_id] = (epoch, expires_at)
        heapq.heappush(self._heap, (expires_at, job_id, epoch))

    def renew(self, job_id: str, epoch: int, expires_at: float) -> bool:
        """Push the expiry of the current lease later; False if ``epoch`` is not current.

        Only the dict changes; the heap entry is moved when it pops (see :meth:`expired`).
        """
        current = self._expires.get(job_id)
        if current is None or current[0] != epoch:
            return False
        if expires_at > current[1]:
            self._expires[job_id] = (epoch, expires_at)
        return True

    def stop(self, job_id: str) -> None:
        """Forget the lease of ``job_id`` (it ended); its heap entry is dropped when it pops."""
        self._expires.pop(job_id, None)

    def expired(self, now: float) -> list[tuple[str, int]]:
        """Pop and return ``(job_id, epoch)`` of every lease whose expiry is ``<= now``.

        In expiry order. An entry of a stopped or replaced lease is dropped; one of a renewed
        lease goes back in at the renewed time.
        """
        out: list[tuple[str, int]] = []
        while self._heap and self._heap[0][0] <= now:
            _, job_id, epoch = heapq.heappop(self._heap)
            current = self._expires.get(job_id)
            if current is None or current[0] != epoch:
                continue  # stopped, or a newer epoch has its own entry
            if current[1] <= now:
                del self._expires[job_id]
                out.append((job_id, epoch))
            else:
                heapq.heappush(self._heap, (current[1], job_id, epoch))
        return out
