"""The live progress line of ``nasd run`` and its closing summary, read from the database.

On a terminal the line is redrawn in place; otherwise (CI, a pipe) a line is printed whenever the
number of finished evaluations changes, so logs stay short.
"""

from __future__ import annotations

import sqlite3
import time
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
    """Draws ``[done/budget] best … | agents busy b/n | mm:ss`` for one experiment."""

    def __init__(self, config: ExperimentConfig, db: Path, out: IO[str]) -> None:
        self.config = config
        self.db = db
        self.out = out
        self.tty = out.isatty()
        self.started = time.monotonic()
        self._conn: sqlite3.Connection | None = None
        self._last_line = ""
        self._last_done = -1

    def start(self, broker_url: str, agents: int) -> None:
        """Print the header: what runs where."""
        print(
            f"nasd: {self.config.name}: {self.config.budget} evaluations, strategy "
            f"{self.config.strategy_name}, trainer {self.config.trainer}, {agents} local agents, "
            f"broker {broker_url}, database {self.db}",
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

    def refresh(self) -> dict[str, Any] | None:
        """Redraw from the database; returns the experiment summary (None before it exists)."""
        conn = self._reader()
        if conn is None:
            return None
        summary = queries.experiment_summary(conn, self.config.name)
        if summary is None:
            return None
        agents = [a for a in queries.agent_summaries(conn) if a["online"]]
        busy = sum(1 for a in agents if a["busy"])
        best = summary["best"]
        best_text = (
            f"best {best['metric']} {best['value']:.4f} (trial {best['trial_id']})"
            if best
            else "best -"
        )
        failed = f" ({summary['failed']} failed)" if summary["failed"] else ""
        line = (
            f"[{summary['done'] + summary['failed']:>4}/{summary['budget']}]{failed} {best_text}"
            f" | agents busy {busy}/{len(agents)} | {_clock(time.monotonic() - self.started)}"
        )
        done = summary["done"] + summary["failed"]
        if self.tty:
            self.out.write("\r" + line.ljust(len(self._last_line)))
            self.out.flush()
            self._last_line = line
        elif done != self._last_done:
            print(line, file=self.out, flush=True)
        self._last_done = done
        return summary

    def finish(self, interrupted: bool) -> None:
        """Print the summary: best architecture, its test accuracy, size, checkpoint, database."""
        if self.tty:
            self.out.write("\n")
        conn = self._reader()
        if conn is None:
            return
        best = queries.best_trial(conn, self.config.name)
        summary = queries.experiment_summary(conn, self.config.name)
        conn.close()
        self._conn = None
        elapsed = _clock(time.monotonic() - self.started)
        if interrupted:
            print(
                f"interrupted after {elapsed}; progress is saved: run the same command to resume",
                file=self.out,
            )
        elif summary is not None:
            print(
                f"{self.config.name}: {summary['status']} in {elapsed}: {summary['done']} "
                f"evaluations finished, {summary['failed']} failed",
                file=self.out,
            )
        if best is None:
            print("no finished evaluation yet", file=self.out)
            return
        print(
            report.best_summary(self.config.name, best, build_space(self.config.space)),
            file=self.out,
        )
        print(f"database: {self.db}", file=self.out, flush=True)
