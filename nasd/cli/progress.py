"""The live progress line of ``nasd run`` and its closing summary, read from the database.

On a terminal the line is redrawn in place; otherwise (CI, a pipe) a line is printed whenever the
number of finished evaluations changes, so logs stay short. A multi-model run shows the totals
over its models, then each model's own count and best value on the same line.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from nasd.cli import report
from nasd.config import ExperimentConfig
from nasd.core.space import build_space
from nasd.errors import StoreError
from nasd.store import open_reader, queries


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:02d}:{secs:02d}"


class ProgressView:
    """Draws ``[done/budget] best … | agents busy b/n | mm:ss`` for the experiments of a run."""

    def __init__(self, configs: Sequence[ExperimentConfig], db: Path, out: IO[str]) -> None:
        self.configs = list(configs)
        self.db = db
        self.out = out
        self.tty = out.isatty()
        self.started = time.monotonic()
        self._conn: sqlite3.Connection | None = None
        self._last_line = ""
        self._last_done = -1

    @property
    def _group(self) -> str | None:
        """The models' group name for a multi-model run; None for a single experiment."""
        return self.configs[0].group if len(self.configs) > 1 or self.configs[0].group else None

    def start(self, broker_url: str, agents: int) -> None:
        """Print the header: what runs where."""
        if self._group is None:
            config = self.configs[0]
            what = (
                f"{config.name}: {config.budget} evaluations, strategy {config.strategy_name},"
                f" trainer {config.trainer}"
            )
        else:
            models = "; ".join(
                f"{c.model or c.name}: {c.budget}, {c.strategy_name}" for c in self.configs
            )
            trainers = ", ".join(sorted({c.trainer for c in self.configs}))
            what = (
                f"{self._group}: {len(self.configs)} models,"
                f" {sum(c.budget for c in self.configs)} evaluations ({models}), trainer {trainers}"
            )
        print(
            f"nasd: {what}, {agents} local agents, broker {broker_url}, database {self.db}",
            file=self.out,
            flush=True,
        )

    def _reader(self) -> sqlite3.Connection | None:
        if self._conn is None:
            try:
                self._conn = open_reader(self.db)
            except StoreError:
                return None
        return self._conn

    def refresh(self) -> list[dict[str, Any]] | None:
        """Redraw from the database; the experiments' summaries (None until all of them exist)."""
        conn = self._reader()
        if conn is None:
            return None
        summaries = [queries.experiment_summary(conn, c.name) for c in self.configs]
        if any(summary is None for summary in summaries):
            return None
        found = [summary for summary in summaries if summary is not None]
        agents = [a for a in queries.agent_summaries(conn) if a["online"]]
        busy = sum(1 for a in agents if a["busy"])
        done = sum(s["done"] + s["failed"] for s in found)
        failed_count = sum(s["failed"] for s in found)
        failed = f" ({failed_count} failed)" if failed_count else ""
        line = (
            f"[{done:>4}/{sum(s['budget'] for s in found)}]{failed} {self._bests(found)}"
            f" | agents busy {busy}/{len(agents)} | {_clock(time.monotonic() - self.started)}"
        )
        if self.tty:
            self.out.write("\r" + line.ljust(len(self._last_line)))
            self.out.flush()
            self._last_line = line
        elif done != self._last_done:
            print(line, file=self.out, flush=True)
        self._last_done = done
        return found

    def _bests(self, summaries: Sequence[Mapping[str, Any]]) -> str:
        """``best val_acc 0.9475 (trial 9)``, or per model ``cnn 3/10 0.9475, unet 1/20 -``."""
        if self._group is None:
            best = summaries[0]["best"]
            if best is None:
                return "best -"
            return f"best {best['metric']} {best['value']:.4f} (trial {best['trial_id']})"
        parts = []
        for config, summary in zip(self.configs, summaries, strict=True):
            best = summary["best"]
            value = f"{best['value']:.4f}" if best else "-"
            finished = summary["done"] + summary["failed"]
            parts.append(f"{config.model or config.name} {finished}/{summary['budget']} {value}")
        metric = next((s["best"]["metric"] for s in summaries if s["best"]), None)
        return f"best {metric or '-'}: " + ", ".join(parts)

    def finish(self, interrupted: bool) -> None:
        """Print the summary: per experiment its best architecture, test accuracy, size and
        checkpoint; then the database."""
        if self.tty:
            self.out.write("\n")
        conn = self._reader()
        if conn is None:
            return
        try:
            bests = [queries.best_trial(conn, c.name) for c in self.configs]
            summaries = [queries.experiment_summary(conn, c.name) for c in self.configs]
        finally:
            conn.close()
            self._conn = None
        elapsed = _clock(time.monotonic() - self.started)
        if interrupted:
            print(
                f"interrupted after {elapsed}; progress is saved: run the same command to resume",
                file=self.out,
            )
        for config, summary, best in zip(self.configs, summaries, bests, strict=True):
            if summary is not None and not interrupted:
                print(
                    f"{config.name}: {summary['status']} in {elapsed}: {summary['done']} "
                    f"evaluations finished, {summary['failed']} failed",
                    file=self.out,
                )
            if best is None:
                prefix = f"{config.name}: " if self._group is not None else ""
                print(f"{prefix}no finished evaluation yet", file=self.out)
                continue
            print(report.best_summary(config.name, best, build_space(config.space)), file=self.out)
        print(f"database: {self.db}", file=self.out, flush=True)
