"""nasd's MQTT side: broker URLs (:mod:`.url`), the reconnecting link (:mod:`.link`), sockets.

``from nasd.mqtt import BrokerUrl`` costs no paho import; the link is imported on first use of
:class:`Link` or :class:`Publication`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nasd.mqtt.sockets import peer_gone
from nasd.mqtt.url import BrokerUrl

if TYPE_CHECKING:
    from nasd.mqtt.link import MAX_INFLIGHT, SOCKET_CHECK_S, Link, Publication

__all__ = ["MAX_INFLIGHT", "SOCKET_CHECK_S", "BrokerUrl", "Link", "Publication", "peer_gone"]

_LAZY = {"MAX_INFLIGHT", "SOCKET_CHECK_S", "Link", "Publication"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from nasd.mqtt import link

        return getattr(link, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
