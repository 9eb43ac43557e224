"""The one place nasd reaches past aiomqtt's public API, so a release that moves it fails here.

aiomqtt wraps a paho client and does not expose it, yet nasd needs three things only paho offers:
a publish that does not wait for its PUBACK (:meth:`nasd.mqtt.Link.publish_nowait`), the socket,
to look for a connection end the event loop missed (the link's socket watch), and its
``on_disconnect`` callback, to hear of a connection lost before its CONNACK (the link's connect).
Everything that needs the paho client gets it from :func:`paho_client`;
``tests/unit/test_adapters.py`` checks that it still returns one, with the members nasd calls.
"""

from __future__ import annotations

import aiomqtt
import paho.mqtt.client as paho_mqtt

__all__ = ["PAHO_MEMBERS_USED", "paho_client"]

PAHO_MEMBERS_USED = ("publish", "socket", "loop_read", "on_disconnect", "_sock_close")
"""The paho ``Client`` members nasd calls or sets (``on_disconnect``: the link hears a connection
lost before its CONNACK, which aiomqtt ignores; ``_sock_close`` only in tests, to drop a half-open
connection); the adapter test fails when a paho release removes one."""


def paho_client(client: aiomqtt.Client) -> paho_mqtt.Client:
    """The paho client inside ``client`` (aiomqtt keeps it in a private attribute).

    Raises RuntimeError, naming this module, if the installed aiomqtt keeps it elsewhere.
    """
    paho = getattr(client, "_client", None)
    if not isinstance(paho, paho_mqtt.Client):
        raise RuntimeError(
            f"aiomqtt {aiomqtt.__version__} no longer keeps its paho client in `_client` "
            f"(found {type(paho).__name__}); update nasd.mqtt.adapters.paho_client"
        )
    return paho
