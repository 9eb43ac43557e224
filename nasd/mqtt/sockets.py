"""Looking at a TCP socket from outside its event loop: has the peer closed or reset it?

:class:`nasd.mqtt.link.Link` asks this once a second because uvloop can stop watching a socket
without telling its reader (see that module); the answer never consumes a byte.
"""

from __future__ import annotations

import os
import socket
from typing import Any

__all__ = ["peer_gone"]


def peer_gone(sock: Any) -> bool:
    """True when the peer has closed or reset this TCP connection (EOF or an error pending).

    Looks without consuming: a one-byte ``MSG_PEEK`` on a duplicate of the descriptor, so TLS
    sockets (which refuse flags) are checked the same way and nothing paho reads is disturbed.
    """
    try:
        probe = socket.socket(fileno=os.dup(sock.fileno()))
    except OSError:
        return True  # the descriptor is already gone
    with probe:  # closes the duplicate only
        try:
            return probe.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError):
            return False  # open, nothing waiting
        except OSError:
            return True  # reset, timed out, unreachable
