"""The live progress line of ``nasd run`` and its closing summary, read from the database.

On a terminal the line is redrawn in place; otherwise (CI, a pipe) a line is printed whenever the
number of finished evaluations changes (or the local agents come online), so logs stay short. A
multi-model run shows the totals over its models, then each model's own count and best value on
the same line.

The line says what a new user wonders about: whether the agents are still starting, whether the
run resumed earlier work (``resuming 6/40`` until its first new result), the latest result, and
once two evaluations of this run have finished, an estimate of the time left from their rate.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from nasd.cli import report
from nasd.config import ExperimentConfig
from nasd.core.objective import Objective
from nasd.core.space import build_space
from nasd.errors import StoreError
from nasd.store import open_reader, queries


def _clock(seconds: float) -> str:
    """``mm:ss`` under an hour, ``h:mm:ss`` from one hour on."""
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes:02d}:{secs:02d}"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def next_steps(name: str, db: Path) -> str:
    """What to do with a finished search: the commands that show and export its results."""
    return (
        f"next: nasd best {name} --db {db}   (the best architecture again)\n"
        f"      nasd export {name} --db {db} -o {name}.csv   (every evaluation, as CSV)"
    )


class ProgressView:
    """Draws ``[done/budget] best … | latest … | agents busy b/n | mm:ss | ETA mm:ss``.

    ``clock`` (seconds, monotonic) and ``tty`` (redraw in place, else plain lines) default to the
    real clock and to whether ``out`` is a terminal; tests pass their own.
    """

    def __init__(
        self,
        configs: Sequence[ExperimentConfig],
        db: Path,
        out: IO[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        tty: bool | None = None,
    ) -> None:
        self.configs = list(configs)
        self.db = db
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self.clock = clock
        self.started = clock()
        self.local_agents = 0
        self._objectives = {c.name: Objective.of_strategy(c.strategy) for c in self.configs}
        self._conn: sqlite3.Connection | None = None
        self._last_line = ""
        self._last_key: tuple[int, bool] | None = None
        self._base: int | None = None  # evaluations finished before this run (a resume)
        self._first: tuple[float, int] | None = None  # (when, done) at this run's first finish
        self._last: tuple[float, int] | None = None  # (when, done) at the latest change

    @property
    def name(self) -> str:
        """The run's name: the models' group, or the single experiment's name."""
        return self._group or self.configs[0].name

    @property
    def _group(self) -> str | None:
        """The models' group name for a multi-model run; None for a single experiment."""
        return self.configs[0].group if len(self.configs) > 1 or self.configs[0].group else None

    def start(self, broker_url: str, agents: int) -> None:
        """Print the header: what runs where. ``agents``: the local agents being started."""
        self.local_agents = agents
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
        line = self.line(found, agents, self._latest(conn), self.clock())
        done = sum(s["done"] + s["failed"] for s in found)
        if self.tty:
            # A line wider than the terminal wraps, and "\r" would then redraw only its tail.
            line = line[: max(20, shutil.get_terminal_size().columns - 1)]
            self.out.write("\r" + line.ljust(len(self._last_line)))
            self.out.flush()
            self._last_line = line
        else:
            key = (done, self._starting(agents))
            if key != self._last_key:
                print(line, file=self.out, flush=True)
            self._last_key = key
        return found

    def line(
        self,
        summaries: Sequence[Mapping[str, Any]],
        agents: Sequence[Mapping[str, Any]],
        latest: tuple[str, float | None] | None,
        now: float,
    ) -> str:
        """The progress line for these summaries, online agents and latest result at ``now``.

        ``latest``: the experiment and objective value of the last finished evaluation (None
        before any; a None value when it did not report the metric). Called once per refresh:
        it also records this run's progress, from which the ETA is estimated.
        """
        done = sum(s["done"] + s["failed"] for s in summaries)
        budget = sum(s["budget"] for s in summaries)
        self._track(done, now)
        failed_count = sum(s["failed"] for s in summaries)
        parts = [f"[{done:>4}/{budget}]" + (f" ({failed_count} failed)" if failed_count else "")]
        base = self._base or 0
        if base and done == base:
            parts[0] += f" resuming {base}/{budget} |"
        parts[0] += f" {self._bests(summaries)}"
        if latest is not None:
            parts.append(self._latest_text(*latest))
        parts.append(self._agents_text(agents))
        parts.append(_clock(now - self.started))
        eta = self.eta(budget - done)
        if eta is not None:
            parts.append(f"ETA {_clock(eta)}")
        return " | ".join(parts)

    def _track(self, done: int, now: float) -> None:
        if self._base is None:
            self._base = done
        if done > self._base and self._first is None:
            self._first = (now, done)
        if self._last is None or done != self._last[1]:
            self._last = (now, done)

    def eta(self, remaining: int) -> float | None:
        """Seconds left for ``remaining`` evaluations at this run's rate; None before two finish.

        The rate is taken from this run's first finished evaluation to its latest (agent start-up
        left out); when both arrived at once, from the start of the run.
        """
        if remaining <= 0 or self._base is None or self._last is None or self._first is None:
            return None
        last_at, last_done = self._last
        if last_done - self._base < 2:
            return None
        first_at, first_done = self._first
        if last_done > first_done and last_at > first_at:
            rate = (last_done - first_done) / (last_at - first_at)
        elif last_at > self.started:
            rate = (last_done - self._base) / (last_at - self.started)
        else:
            return None
        return remaining / rate

    def _starting(self, agents: Sequence[Mapping[str, Any]]) -> bool:
        return len(agents) < self.local_agents

    def _agents_text(self, agents: Sequence[Mapping[str, Any]]) -> str:
        """``starting 2 local agents…`` until one is online, then ``agents busy b/n``."""
        if not agents and self.local_agents:
            plural = "s" if self.local_agents > 1 else ""
            return f"starting {self.local_agents} local agent{plural}…"
        busy = sum(1 for a in agents if a["busy"])
        text = f"agents busy {busy}/{len(agents)}"
        if self._starting(agents):
            text += f" ({self.local_agents - len(agents)} starting…)"
        return text

    def _latest(self, conn: sqlite3.Connection) -> tuple[str, float | None] | None:
        """The experiment and objective value of the last result of this run's experiments."""
        rows = [
            (row[0], config.name, row[1])
            for config in self.configs
            for row in conn.execute(
                "SELECT rowid, metrics FROM results WHERE experiment = ?"
                " ORDER BY rowid DESC LIMIT 1",
                (config.name,),
            )
        ]
        if not rows:
            return None
        _, experiment, metrics = max(rows)
        value = json.loads(metrics).get(self._objectives[experiment].metric)
        return experiment, None if value is None else float(value)

    def _latest_text(self, experiment: str, value: float | None) -> str:
        """``latest 0.9312`` (``latest cells 0.9312`` in a multi-model run)."""
        shown = "-" if value is None else f"{value:.4f}"
        if self._group is None:
            return f"latest {shown}"
        config = next((c for c in self.configs if c.name == experiment), None)
        model = (config.model or config.name) if config is not None else experiment
        return f"latest {model} {shown}"

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

    def finish(self, interrupted: bool, *, complete_before: bool = False) -> None:
        """Print the summary: per experiment its best architecture, test accuracy, size and
        checkpoint; then the database and, unless interrupted, the next steps.

        ``complete_before``: the search had finished in an earlier run (``nasd run`` again); its
        results are shown as at the end of that search, without this run's elapsed time.
        """
        if self.tty and self._last_line:
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
        elapsed = _clock(self.clock() - self.started)
        if interrupted:
            print(
                f"interrupted after {elapsed}; progress is saved: run the same command to resume",
                file=self.out,
            )
        for config, summary, best in zip(self.configs, summaries, bests, strict=True):
            if summary is not None and not interrupted:
                when = "" if complete_before else f" in {elapsed}"
                print(
                    f"{config.name}: {summary['status']}{when}: {summary['done']} "
                    f"evaluations finished, {summary['failed']} failed",
                    file=self.out,
                )
            if best is None:
                prefix = f"{config.name}: " if self._group is not None else ""
                print(f"{prefix}no finished evaluation yet", file=self.out)
                continue
            print(report.best_summary(config.name, best, build_space(config.space)), file=self.out)
        print(f"database: {self.db}", file=self.out, flush=True)
        if not interrupted and any(best is not None for best in bests):
            print(next_steps(self.name, self.db), file=self.out, flush=True)
