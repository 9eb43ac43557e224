"""Search spaces: the registry and :func:`build_space`, which turns a ``[space]`` table into one.

Every space is a :class:`SearchSpace` registered under its ``kind``; ``build_space(s.spec())``
rebuilds an equal space, which is how the daemon restores a space from an experiment's stored
config. This package is pure: it imports no torch, asyncio or sqlite.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nasd.core.space._base import SearchSpace, canonical_json
from nasd.core.space.cnn import CnnSpace
from nasd.core.space.hparams import HparamsSpace
from nasd.core.space.nb201 import NB201Space
from nasd.core.space.rnn_cell import RnnCellSpace
from nasd.core.space.unet import UNetSpace
from nasd.errors import ConfigError

SPACES: dict[str, type[SearchSpace]] = {
    CnnSpace.kind: CnnSpace,
    HparamsSpace.kind: HparamsSpace,
    NB201Space.kind: NB201Space,
    RnnCellSpace.kind: RnnCellSpace,
    UNetSpace.kind: UNetSpace,
}
"""Every search space by ``kind``."""


def build_space(spec: Mapping[str, Any]) -> SearchSpace:
    """Build the space a ``[space]`` table describes; raise :class:`ConfigError` if it is wrong.

    ``spec`` holds ``kind`` plus that kind's parameters; unknown kinds, unknown keys and invalid
    values are reported with the offending key and what is allowed.
    """
    if not isinstance(spec, Mapping):
        raise ConfigError(f"space: expected a table, got {type(spec).__name__}")
    kind = spec.get("kind")
    if kind is None:
        raise ConfigError(f"space.kind: required; one of {sorted(SPACES)}")
    space_class = SPACES.get(kind) if isinstance(kind, str) else None
    if space_class is None:
        raise ConfigError(f"space.kind: unknown kind {kind!r}; one of {sorted(SPACES)}")
    from_spec = getattr(space_class, "from_spec", None)
    if from_spec is None:  # a space without from_spec takes its parameters as keywords
        try:
            return space_class(**{k: v for k, v in spec.items() if k != "kind"})
        except TypeError as error:
            raise ConfigError(f"space: invalid parameters for kind {kind!r}: {error}") from None
    space: SearchSpace = from_spec(spec)
    return space


__all__ = [
    "SPACES",
    "CnnSpace",
    "HparamsSpace",
    "NB201Space",
    "RnnCellSpace",
    "SearchSpace",
    "UNetSpace",
    "build_space",
    "canonical_json",
]
