"""An engine driven through its writer, like the daemon drives it: the engine tests' harness."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from nasd.config import experiment_from_dict
from nasd.engine import Engine, Inbound, Outbound, rebuild
from nasd.engine.security import lease_token
from nasd.store import Writer

PROFILE = {
    "host": "h",
    "device": "cpu",
    "device_name": "cpu",
    "memory_bytes": 16 << 30,
    "cpu_count": 1,
    "gpu_count": 0,
    "torch_version": "2",
    "throughput": 1.0,
    "slots": 2,
    "nasd_version": "0",
    "trainers": ["zero"],
}


def config(name: str = "exp", budget: int = 6, strategy: str = "random", **exp: Any) -> dict:
    return {
        "experiment": {"name": name, "budget": budget, "max_attempts": 2, "lease_ttl_s": 10, **exp},
        "space": {"kind": "nb201"},
        "strategy": {"name": strategy},
        "task": {"trainer": "zero"},
    }


class Harness:
    """Drives an engine through its writer, like the daemon does."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writer = Writer(path)
        self.engine: Engine = self.writer.run_sync(lambda c: rebuild(c, 0.0))
        self.now = 1000.0

    def apply(self, *inputs: Inbound, advance: float = 0.0) -> list[Outbound]:
        self.now += advance
        return self.writer.run_sync(lambda c: self.engine.apply(c, list(inputs), self.now))

    def submit(self, data: dict) -> None:
        conf = experiment_from_dict(data)
        self.writer.run_sync(lambda c: self.engine.submit(c, conf, self.now))

    def online(
        self, agent: str, slots: int = 2, trainers: tuple[str, ...] = ("zero",)
    ) -> list[Outbound]:
        profile = {**PROFILE, "slots": slots, "trainers": list(trainers)}
        return self.apply(Inbound("agent.state", agent, {"state": "online", "profile": profile}))

    def token(self, job_id: str, epoch: int) -> str:
        """The true token of lease ``(job_id, epoch)`` (what its ``trial.assign`` carried)."""
        return lease_token(self.engine.lease_secret, job_id, epoch)

    def result(self, job_id: str, epoch: int, status: str = "ok", val_acc: float = 0.5) -> dict:
        """A result for ``(job_id, epoch)`` that echoes the lease's true token."""
        return result(job_id, epoch, self.token(job_id, epoch), status=status, val_acc=val_acc)

    def security(self) -> dict[str, int]:
        """Refused inputs counted so far, per kind."""
        return dict(self.query("SELECT kind, count FROM security_events"))

    def query(self, sql: str, *args: Any) -> list[tuple]:
        conn = sqlite3.connect(self.path)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()


def result(job_id: str, epoch: int, token: str, status: str = "ok", val_acc: float = 0.5) -> dict:
    """A ``trial.result`` body carrying ``token`` (see :func:`reply` and :meth:`Harness.result`)."""
    return {
        "job_id": job_id,
        "epoch": epoch,
        "token": token,
        "status": status,
        "metrics": {"val_acc": val_acc} if status == "ok" else {},
        "error": None if status == "ok" else "boom",
        "started_at": 1.0,
        "finished_at": 2.0,
        "checkpoint": None,
    }


def token_of(assign: dict) -> str:
    """The lease token a ``trial.assign`` body carries."""
    return str(assign["token"])


def reply(assign: dict, status: str = "ok", val_acc: float = 0.5) -> dict:
    """The result an honest agent sends for a ``trial.assign`` body (echoing its token)."""
    return result(assign["job_id"], assign["epoch"], token_of(assign), status, val_acc)


def assigns(out: list[Outbound]) -> list[dict]:
    return [m.body for m in out if m.type == "trial.assign"]


def of_type(out: list[Outbound], kind: str) -> list[Outbound]:
    return [m for m in out if m.type == kind]


def view(engine: Engine) -> dict[str, Any]:
    """Everything of an engine's state that must survive a restart, in comparable form.

    Left out on purpose: agents' liveness, profiles and drain flags (agents start offline after a
    rebuild, until their retained state arrives), lease expiry times (renewed on restart) and the
    strategies' "waiting" hint (a rebuilt strategy is simply asked again). Agents' trust (strikes,
    quarantines in a row, quarantine end) is kept: a restart must not clear it.
    """
    experiments = {
        name: {
            "status": str(e.status),
            "config": e.config.to_json(),
            "counters": (e.next_trial_id, e.finished, e.failed, e.cancelled),
            "best": e.best,
            "log": (e.last_seq, e.events_since_snapshot),
            "strategy": e.strategy.state_dict(),
            "shadho": (e.complexity, e.loss_low, e.loss_high, e.priority),
        }
        for name, e in engine.experiments.items()
    }
    trials = {
        t.job_id: (
            t.experiment,
            t.trial_id,
            t.genotype,
            t.parent_id,
            t.morphisms,
            t.epochs,
            str(t.status),
            t.attempts,
            t.epoch,
            t.agent,
            dict(t.assignments),
        )
        for t in engine.ledger.trials()
    }
    agents = {
        a.name: (a.slots, sorted(a.leases), a.strikes, a.quarantines, a.quarantined_until)
        for a in engine.ledger.agents()
    }
    return {
        "experiments": experiments,
        "trials": trials,
        "queue": engine.ledger.pending_ids(),
        "agents": agents,
    }
