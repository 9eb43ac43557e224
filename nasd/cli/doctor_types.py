"""The result type of ``nasd doctor``'s checks (shared by :mod:`nasd.cli.doctor` and its parts)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Level", "Result"]


class Level(StrEnum):
    """How a check came out; only ``FAIL`` makes ``nasd doctor`` exit 1."""

    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True, slots=True)
class Result:
    """One line of the report: which check, how it came out, what was found, how to fix it."""

    check: str
    level: Level
    detail: str
    fix: str = ""

    def line(self) -> str:
        """``ok   database: ...`` or ``FAIL broker: ... -> fix: ...`` (one line)."""
        text = f"{self.check}: {self.detail}"
        if self.fix and self.level is not Level.OK:
            text += f" -> fix: {self.fix}"
        # never more than one line, whatever an error message held
        return f"{self.level.value:<4} " + " ".join(text.split())
