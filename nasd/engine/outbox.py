"""Messages the engine decided to send, held until the transaction that decided them commits.

One builder per message kind, so topics and body layouts live in one place. Nothing here is
published directly: the daemon drains the outbox after the commit (DESIGN.md section 3).

Lease tokens (:func:`nasd.engine.security.lease_token`): ``trial.assign`` and ``trial.cancel``
carry the token of their lease, so an agent obeys only a cancel that names its own lease;
``trial.ack`` echoes the token of the result it acknowledges, so an agent drops from its spool
only the result that ack is for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nasd.config import ExperimentConfig
from nasd.core.wire import AgentLeaf, agent_topic, control_response_topic, experiment_events_topic
from nasd.engine.records import EventKind, LiveTrial, Outbound
from nasd.engine.security import lease_token


def assign_message(trial: LiveTrial, config: ExperimentConfig, secret: bytes) -> Outbound:
    """The ``trial.assign`` of the current lease of ``trial`` (also used to re-send it).

    ``secret`` is the engine's lease secret: the body carries the lease's token, which the
    agent's result must echo.
    """
    if trial.agent is None:
        raise ValueError(f"trial {trial.job_id} has no active lease")
    body = {
        "job_id": trial.job_id,
        "experiment": trial.experiment,
        "trial_id": trial.trial_id,
        "epoch": trial.epoch,
        "token": lease_token(secret, trial.job_id, trial.epoch),
        "genotype": trial.genotype,
        "space": config.space,
        "task": {"trainer": config.trainer, "options": config.task.get("options", {})},
        "epochs": trial.epochs if trial.epochs is not None else config.epochs,
        "seed": (config.seed * 1_000_003 + trial.trial_id) % (2**31),
        "parent_id": trial.parent_id,
        "morphisms": trial.morphisms,
    }
    return Outbound(agent_topic(trial.agent, AgentLeaf.ASSIGN), "trial.assign", body)


class Outbox:
    """An ordered list of :class:`Outbound` messages with a builder for each kind.

    ``lease_secret`` keys the tokens of the assignments and cancels it builds.
    """

    def __init__(self, lease_secret: bytes) -> None:
        self._messages: list[Outbound] = []
        self._secret = lease_secret

    def drain(self) -> list[Outbound]:
        """Everything queued so far, in order; the outbox is empty afterwards."""
        out, self._messages = self._messages, []
        return out

    def emit(self, message: Outbound) -> None:
        """Queue ``message`` as it is."""
        self._messages.append(message)

    def assign(self, trial: LiveTrial, config: ExperimentConfig) -> None:
        """Tell the trial's agent to train it under its current lease."""
        self.emit(assign_message(trial, config, self._secret))

    def ack(self, agent: str, job_id: str, epoch: int, token: str) -> None:
        """Tell ``agent`` its result for ``(job_id, epoch)`` is stored (it may drop its spool).

        ``token`` is the one the result carried (echoed, never recomputed: an agent's spool from
        another database holds tokens this daemon cannot make, and must still drain).
        """
        body = {"job_id": job_id, "epoch": epoch, "token": token}
        self.emit(Outbound(agent_topic(agent, AgentLeaf.ACK), "trial.ack", body))

    def cancel(self, agent: str, job_id: str, epoch: int) -> None:
        """Tell ``agent`` to stop training ``(job_id, epoch)``: its lease is over."""
        body = {"job_id": job_id, "epoch": epoch, "token": lease_token(self._secret, job_id, epoch)}
        self.emit(Outbound(agent_topic(agent, AgentLeaf.CANCEL), "trial.cancel", body))

    def event(
        self,
        experiment: str,
        kind: EventKind,
        trial_id: int | None = None,
        metrics: Mapping[str, float] | None = None,
        genotype: Mapping[str, Any] | None = None,
    ) -> None:
        """An ``experiment.event`` for watchers (QoS 0: progress displays, never state)."""
        body = {
            "experiment": experiment,
            "kind": kind.value,
            "trial_id": trial_id,
            "metrics": dict(metrics or {}),
            "genotype": dict(genotype) if genotype else None,
        }
        topic = experiment_events_topic(experiment)
        self.emit(Outbound(topic, "experiment.event", body, qos=0))

    def reply(self, client: str, body: Mapping[str, Any]) -> None:
        """A ``control.response`` to the CLI client ``client``."""
        topic = control_response_topic(client)
        self.emit(Outbound(topic, "control.response", dict(body)))
