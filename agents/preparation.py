"""From an assignment to what a trainer thread runs, refusing what this agent must not do.

An assignment names a trainer, a space and a genotype. Before anything runs for it, the trainer
must be one this agent offers (:func:`agents.trainers.require_offered`: nothing is imported for
any other name, since importing a module runs its code) and the genotype must belong to its space
(so a forged or corrupted assignment never reaches a trainer). Trainers and spaces are built once
and cached.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from agents.trainers import require_offered
from agents.trainers._base import TrainFn, TrainRequest
from nasd.core.space import SearchSpace, build_space, canonical_json
from nasd.errors import InvalidGenotype, NasdError

__all__ = ["Preparation"]

SPACE_CACHE_SIZE = 16
"""Built spaces kept (an agent usually serves one or two experiments at a time)."""


class Preparation:
    """Checks an assignment and builds its :class:`TrainRequest` and trainer (see module doc)."""

    def __init__(
        self,
        offered: Collection[str],
        load_trainer: Callable[[str], TrainFn],
        *,
        device: str,
        checkpoint_dir: Path | None,
    ) -> None:
        self._offered = frozenset(offered)
        self._load_trainer = load_trainer
        self._device = device
        self._checkpoint_dir = checkpoint_dir
        self._trainers: dict[str, TrainFn] = {}
        self._spaces: dict[str, SearchSpace] = {}

    def request(self, job_id: str, body: Mapping[str, Any]) -> TrainRequest:
        """The trainer's view of the ``trial.assign`` ``body`` of ``job_id``."""
        return TrainRequest(
            job_id=job_id,
            experiment=str(body["experiment"]),
            trial_id=int(body["trial_id"]),
            genotype=body["genotype"],
            space=body["space"],
            options=body["task"]["options"],
            epochs=body["epochs"],
            seed=int(body["seed"]),
            device=self._device,
            checkpoint_dir=self._checkpoint_dir,
        )

    def trainer(self, body: Mapping[str, Any]) -> TrainFn:
        """The trainer of ``body`` once the checks pass; :class:`NasdError` saying why not."""
        name = str(body["task"]["trainer"])
        require_offered(name, self._offered)  # before anything is imported for it
        self._check_genotype(body["space"], body["genotype"])
        trainer = self._trainers.get(name)
        if trainer is None:
            trainer = self._trainers[name] = self._load_trainer(name)
        return trainer

    def _check_genotype(self, spec: Mapping[str, Any], genotype: Any) -> None:
        """Raise :class:`nasd.errors.NasdError` unless ``genotype`` belongs to space ``spec``."""
        try:
            key: str | None = canonical_json(spec)
        except (TypeError, ValueError):
            key = None
        space = self._spaces.get(key) if key is not None else None
        if space is None:
            space = build_space(spec)  # ConfigError names what is wrong with the space
            if key is not None:
                if len(self._spaces) >= SPACE_CACHE_SIZE:
                    self._spaces.clear()
                self._spaces[key] = space
        try:
            space.validate(genotype)
        except NasdError as exc:
            raise InvalidGenotype(f"invalid genotype for space {space.kind!r}: {exc}") from None
