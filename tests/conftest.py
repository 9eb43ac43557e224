"""Shared fixtures: real MQTT brokers.

- ``mosquitto``: a fresh Mosquitto per test (restart/kill it freely).
- ``shared_mosquitto``: one Mosquitto for the whole session, for tests that never restart it.
- ``embedded_broker``: nasd's embedded broker on its own loop in a thread.
- ``broker``: parametrized over both, for behaviour that must hold on either.

Mosquitto is required, never skipped: CI must really test against it. ``make test`` installs it.
On teardown the broker's log tail is printed, so a failing test shows it under "Captured stdout".
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from tests.brokers import (
    MOSQUITTO_MISSING,
    BrokerHandle,
    MosquittoNotFound,
    MosquittoProcess,
    ThreadedEmbeddedBroker,
)


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Undo a test's ``nasd.logs.configure``: a CLI ``main()`` run in-process binds structlog to
    the ``sys.stderr`` of that moment, a capture stream pytest closes after the test, and every
    later log line would then fail with "I/O operation on closed file"."""
    yield
    structlog.reset_defaults()
    for handler in list(logging.root.handlers):
        logging.root.removeHandler(handler)


def _mosquitto_in(workdir: Path) -> Iterator[MosquittoProcess]:
    try:
        process = MosquittoProcess(workdir)
    except MosquittoNotFound:
        pytest.fail(MOSQUITTO_MISSING, pytrace=False)
    process.start()
    try:
        yield process
    finally:
        process.stop()
        print(f"--- mosquitto log ({process.log_path}) ---\n{process.log_tail()}")


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoProcess]:
    """A real Mosquitto on a free loopback port, terminated on teardown."""
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    yield from _mosquitto_in(workdir)


@pytest.fixture(scope="session")
def shared_mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoProcess]:
    """One Mosquitto for the whole session: do not restart, kill or SIGSTOP it."""
    yield from _mosquitto_in(tmp_path_factory.mktemp("shared-mosquitto"))


@pytest.fixture
def embedded_broker() -> Iterator[ThreadedEmbeddedBroker]:
    """nasd's embedded broker on its own event loop in a background thread."""
    broker = ThreadedEmbeddedBroker()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(params=["mosquitto", "embedded"])
def broker(request: pytest.FixtureRequest) -> BrokerHandle:
    """Each test using it runs once against Mosquitto and once against the embedded broker."""
    name = "embedded_broker" if request.param == "embedded" else "mosquitto"
    handle: BrokerHandle = request.getfixturevalue(name)
    return handle
