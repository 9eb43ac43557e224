"""sd_notify without a dependency: READY, WATCHDOG and STOPPING over ``$NOTIFY_SOCKET``.

Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op, so the daemon behaves the same in a
terminal, a test, or a ``Type=notify`` unit.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    """Sends state lines to systemd; ``watchdog_interval`` says how often to ping (or None)."""

    def __init__(self) -> None:
        self._address = os.environ.get("NOTIFY_SOCKET")
        if self._address and self._address.startswith("@"):
            self._address = "\0" + self._address[1:]
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        enabled = usec is not None and usec.isdigit() and (pid is None or pid == str(os.getpid()))
        self.watchdog_interval: float | None = int(usec) / 2e6 if enabled and usec else None

    def notify(self, state: str) -> None:
        """Send one state line such as ``READY=1``; failures are ignored (best effort).

        Non-blocking: this runs on the event loop, and a receiver that stops reading (its
        datagram queue full) must never freeze the daemon.
        """
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                sock.connect(self._address)
                sock.send(state.encode())
        except OSError:
            pass

    def ready(self, status: str = "") -> None:
        """The store is open and the broker connected."""
        self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> None:
        """Proof of life from the event loop."""
        self.notify("WATCHDOG=1")

    def stopping(self) -> None:
        """Shutdown has begun."""
        self.notify("STOPPING=1")
