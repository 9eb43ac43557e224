"""The ledger of live work: unfinished trials, the pending queue, agents and their leases.

It is the only owner of that state, and its methods are the only way to change it, because the
pieces must move together. The invariants it keeps after every method:

* a trial is in :attr:`Ledger.pending` exactly when its status is ``PENDING``;
* a ``RUNNING`` trial with ``agent = A`` is in ``A``'s ``leases`` and its lease is timed by the
  lease clock; no other trial is in any agent's ``leases``;
* finished (succeeded, failed, cancelled) trials are not in the ledger at all.

Pure memory: the engine writes the database beside each call (see :mod:`nasd.engine.core`).
"""

from __future__ import annotations

from collections.abc import Iterator

from nasd.core.scheduler import LeaseClock
from nasd.engine.records import AgentRecord, LiveTrial, TrialStatus


class Ledger:
    """Live trials, the pending queue (oldest first), agents and lease expiry."""

    def __init__(self) -> None:
        self._trials: dict[str, LiveTrial] = {}
        self._pending: set[str] = set()  # the queue, ordered by admission number
        self._admission: dict[str, int] = {}  # job id -> order in which it was proposed
        self._admitted = 0
        self._agents: dict[str, AgentRecord] = {}
        self._clock = LeaseClock()

    # -- reading ----------------------------------------------------------------------------------

    def get(self, job_id: str) -> LiveTrial | None:
        """The live trial ``job_id``, or None if it finished or never existed."""
        return self._trials.get(job_id)

    def trials(self) -> Iterator[LiveTrial]:
        """Every live trial, in the order they were added."""
        return iter(list(self._trials.values()))

    def running(self) -> Iterator[LiveTrial]:
        """Every trial under an active lease."""
        return (t for t in self.trials() if t.status is TrialStatus.RUNNING and t.agent)

    def of_experiment(self, experiment: str) -> list[LiveTrial]:
        """The live trials of one experiment."""
        return [t for t in self._trials.values() if t.experiment == experiment]

    def pending_ids(self) -> list[str]:
        """The queue of pending job ids, oldest trial first.

        A requeued trial keeps its place: retries go before younger trials, and the order is the
        one a rebuild reads back from the database (the order trials were proposed in).
        """
        return sorted(self._pending, key=self._admission.__getitem__)

    @property
    def pending_count(self) -> int:
        """How many trials wait for an agent."""
        return len(self._pending)

    def agent(self, name: str) -> AgentRecord:
        """The record of agent ``name`` (created, offline, on first mention)."""
        record = self._agents.get(name)
        if record is None:
            record = self._agents[name] = AgentRecord(name)
        return record

    def find_agent(self, name: str) -> AgentRecord | None:
        """The record of agent ``name``, or None if it was never born (or was forgotten)."""
        return self._agents.get(name)

    def agents(self) -> Iterator[AgentRecord]:
        """Every agent known (born and not forgotten)."""
        return iter(self._agents.values())

    @property
    def agent_count(self) -> int:
        """How many agents are known."""
        return len(self._agents)

    def forget_agent(self, name: str) -> None:
        """Drop an agent that holds no lease (pruned to bound what strangers can create)."""
        record = self._agents.get(name)
        if record is not None and record.leases:
            raise ValueError(f"agent {name} still holds leases")
        self._agents.pop(name, None)

    def online_trainers(self) -> frozenset[str]:
        """Every trainer some online agent offers (quarantined or busy ones included)."""
        return frozenset(t for a in self._agents.values() if a.online for t in a.trainers)

    def expired(self, now: float) -> list[LiveTrial]:
        """Running trials whose current lease has run out by ``now`` (their timers stop)."""
        out = []
        for job_id, epoch in self._clock.expired(now):
            trial = self._trials.get(job_id)
            if trial is not None and trial.status is TrialStatus.RUNNING and trial.epoch == epoch:
                out.append(trial)
        return out

    # -- changing ---------------------------------------------------------------------------------

    def add(self, trial: LiveTrial) -> None:
        """Queue a new pending trial."""
        if trial.job_id in self._trials:
            raise ValueError(f"trial {trial.job_id} is already live")
        trial.status = TrialStatus.PENDING
        trial.agent = None
        self._track(trial)
        self._pending.add(trial.job_id)

    def lease(self, trial: LiveTrial, agent: str, expires_at: float) -> int:
        """Lease a pending trial to ``agent`` under a new epoch (returned); times the lease."""
        if trial.job_id not in self._pending:
            raise ValueError(f"trial {trial.job_id} is not pending")
        self._pending.remove(trial.job_id)
        trial.epoch += 1
        trial.status = TrialStatus.RUNNING
        trial.agent = agent
        trial.assignments[trial.epoch] = agent
        self.agent(agent).leases.add(trial.job_id)
        self._clock.start(trial.job_id, trial.epoch, expires_at)
        return trial.epoch

    def renew(self, job_id: str, epoch: int, expires_at: float) -> bool:
        """Push the current lease's expiry later; False if ``epoch`` is not the current one."""
        return self._clock.renew(job_id, epoch, expires_at)

    def requeue(self, trial: LiveTrial) -> None:
        """End the trial's lease (if any) and put it back at the end of the queue."""
        self._release(trial)
        trial.status = TrialStatus.PENDING
        self._pending.add(trial.job_id)

    def retire(self, trial: LiveTrial) -> None:
        """Forget a trial that finished (any way): lease, queue entry and all."""
        self._release(trial)
        self._pending.discard(trial.job_id)
        del self._trials[trial.job_id]
        del self._admission[trial.job_id]

    def restore(self, trial: LiveTrial, expires_at: float) -> None:
        """Put back a trial read from the database at start-up, as the database says it was.

        Trials must be restored in the order they were proposed (that is the queue order).
        """
        self._track(trial)
        if trial.status is TrialStatus.PENDING:
            self._pending.add(trial.job_id)
        elif trial.agent is not None:
            self.agent(trial.agent).leases.add(trial.job_id)
            self._clock.start(trial.job_id, trial.epoch, expires_at)

    def _track(self, trial: LiveTrial) -> None:
        self._trials[trial.job_id] = trial
        self._admitted += 1
        self._admission[trial.job_id] = self._admitted

    def _release(self, trial: LiveTrial) -> None:
        if trial.agent is not None:
            self.agent(trial.agent).leases.discard(trial.job_id)
        self._clock.stop(trial.job_id)
        trial.agent = None

    # -- checking ---------------------------------------------------------------------------------

    def check(self) -> None:
        """Raise AssertionError naming the first invariant (module docstring) that does not hold.

        For tests and debugging; explicit raises, so it also works under ``python -O``.
        """
        for job_id, trial in self._trials.items():
            pending = trial.status is TrialStatus.PENDING
            if (job_id in self._pending) != pending or job_id not in self._admission:
                raise AssertionError(f"{job_id}: queue membership does not match {trial.status}")
            if not pending and trial.status is not TrialStatus.RUNNING:
                raise AssertionError(f"{job_id}: a {trial.status} trial is still live")
            holder = None if pending else trial.agent
            record = None if holder is None else self._agents.get(holder)
            tracked = holder is None or (
                record is not None and job_id in record.leases and job_id in self._clock
            )
            if not tracked:
                raise AssertionError(f"{job_id}: lease of {trial.agent} is not tracked")
        for record in self._agents.values():
            for job_id in record.leases:
                held = self._trials.get(job_id)
                if held is None or held.agent != record.name:
                    raise AssertionError(f"{record.name} holds {job_id} without a lease")
