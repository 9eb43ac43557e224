"""``nasd doctor``'s look at the broker: reachability, credentials, TLS, round trip, traffic.

:func:`observe` makes one connection with the operator's credentials, subscribes to everything
under ``nasd/v1/`` (the retained daemon and agent states arrive at once), publishes a probe to
its own topic ``nasd/v1/doctor/<client>`` and times its return, then listens for a short window.
The ``check_*`` functions turn that :class:`Observation` into results, so they can be tested on
observations made by hand as well as on a real Mosquitto.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiomqtt

from nasd.cli.doctor_types import Level, Result
from nasd.core.wire import decode, message_type_for_topic
from nasd.core.wire.topics import ROOT, AgentLeaf, daemon_state_topic, parse_agent_topic
from nasd.errors import WireError
from nasd.mqtt.link import PAHO_LOG

if TYPE_CHECKING:
    from nasd.mqtt import BrokerUrl

__all__ = [
    "Observation",
    "Seen",
    "check_broker",
    "check_clocks",
    "check_daemon",
    "check_tls",
    "observe",
]

DOCTOR_TOPIC = f"{ROOT}/doctor"
_DAEMON_LEAVES = {AgentLeaf.ASSIGN, AgentLeaf.CANCEL, AgentLeaf.ACK}


@dataclass(frozen=True, slots=True)
class Seen:
    """One decoded message: who sent it, when it says it was sent, when it arrived."""

    topic: str
    sender: str  # "daemon" or the agent's name
    retained: bool
    sent_at: float
    received_at: float
    body: dict[str, object]


@dataclass(slots=True)
class Observation:
    """What one visit to the broker saw (``error`` set when it could not connect at all)."""

    broker: str
    error: str | None = None
    error_kind: str | None = None  # "unreachable", "credentials", "tls"
    round_trip_s: float | None = None
    seen: list[Seen] = field(default_factory=list)
    undecodable: int = 0


def _sender(topic: str) -> str | None:
    if topic == daemon_state_topic() or topic.startswith(f"{ROOT}/events/"):
        return "daemon"
    if topic.startswith(f"{ROOT}/control/response/"):
        return "daemon"
    try:
        agent, leaf = parse_agent_topic(topic)
    except WireError:
        return None
    return "daemon" if leaf in _DAEMON_LEAVES else agent


def _classify(exc: Exception) -> str:
    text = str(exc).lower()
    if isinstance(exc, ssl.SSLError) or "certificate" in text or "ssl" in text:
        return "tls"
    if "not authori" in text or "password" in text or "bad user" in text or "code:5" in text:
        return "credentials"
    return "unreachable"


async def observe(
    broker: BrokerUrl, *, window_s: float = 1.5, timeout_s: float = 5.0
) -> Observation:
    """Connect, read the retained states, time a probe to ourselves and listen ``window_s``."""
    seen = Observation(str(broker))
    client_id = f"nasd-doctor-{uuid.uuid4().hex[:12]}"
    probe_topic = f"{DOCTOR_TOPIC}/{client_id}"
    probe = uuid.uuid4().hex.encode()
    try:
        async with aiomqtt.Client(
            **broker.client_options(),
            identifier=client_id,
            clean_session=True,
            timeout=timeout_s,
            logger=PAHO_LOG,
        ) as client:
            await client.subscribe(probe_topic, qos=1)
            await client.subscribe(f"{ROOT}/#", qos=0)
            sent = time.monotonic()
            await client.publish(probe_topic, probe, qos=1)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(window_s, 0.1)):
                    async for message in client.messages:
                        _note(seen, message, probe, sent)
    except aiomqtt.MqttError as exc:
        seen.error, seen.error_kind = str(exc), _classify(exc)
    except (OSError, ssl.SSLError) as exc:
        seen.error, seen.error_kind = str(exc), _classify(exc)
    return seen


def _note(seen: Observation, message: aiomqtt.Message, probe: bytes, sent: float) -> None:
    now = time.time()
    topic = str(message.topic)
    if topic.startswith(DOCTOR_TOPIC + "/"):
        if message.payload == probe and seen.round_trip_s is None:
            seen.round_trip_s = time.monotonic() - sent
        return
    sender = _sender(topic)
    if sender is None:
        return
    try:
        envelope = decode(message.payload, expect=message_type_for_topic(topic))
    except WireError:
        seen.undecodable += 1
        return
    seen.seen.append(
        Seen(topic, sender, bool(message.retain), envelope.sent_at, now, envelope.body)
    )


def check_broker(seen: Observation, *, slow_rtt_s: float = 0.5) -> list[Result]:
    """Reachable, credentials accepted, and the round-trip time of a publish to ourselves."""
    if seen.error is not None:
        fixes = {
            "unreachable": "start the broker (systemctl start mosquitto) or correct host:port",
            "credentials": "check the user and password (or NASD_BROKER_PASSWORD_FILE) against "
            "the broker's password file",
            "tls": "install the broker's CA (SSL_CERT_FILE=ca.pem) or renew its certificate",
        }
        kind = seen.error_kind or "unreachable"
        name = {"unreachable": "reachable", "credentials": "credentials", "tls": "tls"}[kind]
        return [Result(f"broker {name}", Level.FAIL, f"{seen.broker}: {seen.error}", fixes[kind])]
    results = [Result("broker", Level.OK, f"{seen.broker}: connected, credentials accepted")]
    if seen.round_trip_s is None:
        results.append(
            Result(
                "broker round trip",
                Level.WARN,
                f"a publish to {DOCTOR_TOPIC}/<client> did not come back",
                f"allow this user readwrite on {DOCTOR_TOPIC}/# in the broker's ACL file",
            )
        )
    else:
        slow = seen.round_trip_s > slow_rtt_s
        results.append(
            Result(
                "broker round trip",
                Level.WARN if slow else Level.OK,
                f"{seen.round_trip_s * 1000:.1f} ms",
                "set `set_tcp_nodelay true` in mosquitto.conf; check the network" if slow else "",
            )
        )
    if seen.undecodable:
        results.append(
            Result(
                "broker traffic",
                Level.WARN,
                f"{seen.undecodable} message(s) under {ROOT}/ are not valid nasd messages",
                "find the publisher; restrict who may publish with the broker's ACL file",
            )
        )
    return results


def check_daemon(seen: Observation, now: float | None = None) -> Result:
    """The daemon's retained state: online, with its pid and start time."""
    now = time.time() if now is None else now
    states = [s for s in seen.seen if s.topic == daemon_state_topic()]
    if not states:
        return Result(
            "daemon",
            Level.FAIL,
            "no daemon state retained on the broker: no daemon ever ran against it",
            "start it: systemctl start nasd (or nasd serve --config nasd.toml)",
        )
    body = states[-1].body
    if body.get("state") != "online":
        return Result(
            "daemon",
            Level.FAIL,
            "the daemon's retained state is offline",
            "start it: systemctl start nasd; see journalctl -u nasd for why it stopped",
        )
    started = body.get("started_at")
    since = f", up {_duration(now - float(started))}" if isinstance(started, int | float) else ""
    return Result("daemon", Level.OK, f"online (pid {body.get('pid', '?')}{since})")


def _duration(seconds: float) -> str:
    """``42 s``, ``17 min``, ``5.3 h``, ``12.0 days``."""
    if seconds < 120:
        return f"{max(seconds, 0):.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def check_clocks(seen: Observation, *, max_skew_s: float = 5.0) -> list[Result]:
    """Compare senders' ``sent_at`` with local time.

    A live message's ``sent_at`` should be just before its arrival: the difference is the clock
    offset (plus network delay). A retained message may be old, so only a ``sent_at`` in the
    future says something (that sender's clock is ahead).
    """
    worst: dict[str, float] = {}
    for s in seen.seen:
        offset = s.sent_at - s.received_at
        if s.retained and offset <= 0:
            continue
        if s.sender not in worst or abs(offset) > abs(worst[s.sender]):
            worst[s.sender] = offset
    if not worst:
        return [Result("clocks", Level.OK, "not compared: no live traffic in the window")]
    off = {sender: o for sender, o in worst.items() if abs(o) > max_skew_s}
    if not off:
        biggest = max(abs(o) for o in worst.values())
        return [
            Result("clocks", Level.OK, f"{len(worst)} sender(s) within {biggest:.2f} s of here")
        ]
    return [
        Result(
            f"clock of {sender}",
            Level.WARN,
            f"{abs(o):.1f} s {'ahead of' if o > 0 else 'behind'} this machine",
            "run NTP (timedatectl set-ntp true; chronyc tracking) on both machines",
        )
        for sender, o in sorted(off.items())
    ]


def check_tls(broker: BrokerUrl, *, warn_days: float = 21.0, timeout_s: float = 5.0) -> Result:
    """The broker's certificate: verified against the system CA store, and days to expiry."""
    context = ssl.create_default_context()
    try:
        with (
            socket.create_connection((broker.host, broker.port), timeout=timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=broker.host) as tls,
        ):
            cert = tls.getpeercert()
    except ssl.SSLCertVerificationError as exc:
        return Result(
            "broker tls",
            Level.FAIL,
            f"certificate not trusted: {exc.verify_message}",
            "point SSL_CERT_FILE at the CA that signed it, or fix the certificate's names",
        )
    except (OSError, ssl.SSLError) as exc:
        return Result("broker tls", Level.FAIL, f"TLS handshake failed: {exc}", "check the port")
    expires = ssl.cert_time_to_seconds(str((cert or {}).get("notAfter")))
    days = (expires - time.time()) / 86400
    if days < warn_days:
        return Result(
            "broker tls",
            Level.WARN,
            f"certificate valid, expires in {days:.1f} days",
            "renew the broker's certificate before it expires",
        )
    return Result("broker tls", Level.OK, f"certificate valid for {days:.0f} more days")
