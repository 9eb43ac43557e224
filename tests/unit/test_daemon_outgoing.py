"""nasd.service.outgoing: a message that cannot be encoded is logged and dropped, never fatal."""

from __future__ import annotations

from structlog.testing import capture_logs

from nasd.core.wire import decode
from nasd.engine import Outbound
from nasd.engine.control import MAX_ECHO_CHARS, clip, echo, refusal
from nasd.service.outgoing import to_publication, to_publications

RESPONSE_TOPIC = "nasd/v1/control/response/cli-1"


def test_an_oversized_reply_is_replaced_by_a_short_refusal() -> None:
    body = {"correlation_id": "c1", "ok": False, "result": None, "error": "x" * 5000}
    with capture_logs() as logs:
        publication = to_publication(Outbound(RESPONSE_TOPIC, "control.response", body))
    assert publication is not None and publication.topic == RESPONSE_TOPIC
    reply = decode(publication.payload, expect="control.response").body
    assert reply["ok"] is False and reply["correlation_id"] == "c1"
    assert "could not send its reply" in reply["error"] and len(reply["error"]) < 1000
    assert [e["event"] for e in logs] == ["publish.unencodable"]
    assert logs[0]["type"] == "control.response" and logs[0]["topic"] == RESPONSE_TOPIC


def test_an_unencodable_message_of_another_type_is_dropped_and_the_rest_goes_out() -> None:
    bad = Outbound("nasd/v1/events/x", "experiment.event", {"experiment": "x", "kind": {1, 2}})
    good = Outbound(RESPONSE_TOPIC, "control.response", refusal("c2", "no"))
    with capture_logs() as logs:
        publications = to_publications([bad, good])
    assert [p.topic for p in publications] == [RESPONSE_TOPIC]
    assert logs[0]["event"] == "publish.unencodable" and "reason" in logs[0]


def test_a_reply_without_a_usable_correlation_id_is_dropped() -> None:
    body = {"correlation_id": "c" * 100, "ok": True, "result": None, "error": None}
    with capture_logs():
        assert to_publication(Outbound(RESPONSE_TOPIC, "control.response", body)) is None


def test_echoed_input_and_errors_are_clipped() -> None:
    assert clip("abc", 10) == "abc"
    cut = clip("y" * 5000, 100)
    assert len(cut) == 100 and cut.endswith("(5000 characters)")
    assert len(echo("z" * 5000)) <= MAX_ECHO_CHARS + 2  # the quotes of repr
    assert len(refusal("c", "e" * 9000)["error"]) < 4000
