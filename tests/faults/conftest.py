"""The fault suite's summary: every scenario's checker counts at the end of the test output.

Each scenario prints its line as it ends (seen with ``pytest -s``); this repeats them all under
one heading in the terminal summary, so a plain ``make test`` log shows the counts too.
"""

from __future__ import annotations

import pytest

from tests.faults.checker import LINES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the checker's count lines of the scenarios that ran, if any did."""
    if LINES:
        terminalreporter.section("fault checker counts")
        for line in LINES:
            terminalreporter.write_line(line)
