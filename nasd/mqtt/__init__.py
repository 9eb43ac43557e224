"""nasd's MQTT side: broker URLs (:mod:`.url`), the reconnecting link (:mod:`.link`), sockets."""

from __future__ import annotations

from nasd.mqtt.link import MAX_INFLIGHT, SOCKET_CHECK_S, Link, Publication
from nasd.mqtt.sockets import peer_gone
from nasd.mqtt.url import BrokerUrl

__all__ = ["MAX_INFLIGHT", "SOCKET_CHECK_S", "BrokerUrl", "Link", "Publication", "peer_gone"]
