"""nasd.service.intake: size limits before decoding, rate limits, time slices, refusal tallies."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import msgpack

from nasd.core.wire import decode, encode, payload_limit
from nasd.engine.security import SecurityKind
from nasd.service.intake import Intake, Parsed, RateLimiter, Refusals, TokenBucket
from nasd.store import open_memory

CONTROL = "nasd/v1/control/request/status"


@dataclass
class Message:
    topic: str
    payload: object


def _request(client: str, correlation_id: str = "c", **extra: object) -> bytes:
    body = {"client": client, "correlation_id": correlation_id, "command": "status", "args": {}}
    body.update(extra)
    envelope = {"v": 1, "type": "control.request", "id": "i", "sent_at": 1.0, "body": body}
    return bytes(msgpack.packb(envelope))


def test_a_payload_over_its_topic_limit_is_refused_before_it_is_unpacked() -> None:
    parsed = Parsed()
    limit = payload_limit("trial.result")
    Intake().take("nasd/v1/agents/a1/result", b"\xc1" * (limit + 1), parsed)
    assert parsed.inputs == [] and parsed.replies == []
    ((kind, source),) = parsed.refusals.counts
    assert (kind, source) == (SecurityKind.OVERSIZED, "a1")
    assert "exceeds" in parsed.refusals.counts[(kind, source)].detail


def test_a_malformed_request_with_a_reply_address_is_answered_and_counted() -> None:
    parsed = Parsed()
    Intake().take(CONTROL, _request("cli-1", "c9", args={"junk": 1}), parsed)
    assert parsed.inputs == []
    (reply,) = parsed.replies
    assert reply.topic == "nasd/v1/control/response/cli-1"
    body = decode(encode(reply.type, reply.body), expect="control.response").body
    assert body["ok"] is False and body["correlation_id"] == "c9"
    assert body["error"].startswith("request refused: control.request: body.args")
    assert list(parsed.refusals.counts) == [(SecurityKind.MALFORMED, None)]


def test_garbage_without_a_reply_address_gets_no_reply() -> None:
    parsed = Parsed()
    Intake().take(CONTROL, b"\x81" * 10, parsed)
    Intake().take(CONTROL, _request("no/slash", args={"junk": 1}), parsed)
    assert parsed.replies == [] and parsed.refusals.total == 2


def test_each_client_and_everyone_together_are_rate_limited() -> None:
    limiter = RateLimiter(client_rate=1, client_burst=3, global_rate=1, global_burst=5)
    intake, parsed = Intake(limiter), Parsed()
    for _ in range(4):
        intake.take(CONTROL, _request("greedy"), parsed)
    assert len(parsed.inputs) == 3
    assert parsed.refusals.counts[(SecurityKind.RATE_LIMITED, "greedy")].count == 1
    for i in range(3):
        intake.take(CONTROL, _request(f"made-up-{i}"), parsed)
    assert len(parsed.inputs) == 4  # the global bucket had one token left
    assert parsed.refusals.counts[(SecurityKind.RATE_LIMITED, None)].count == 2


def test_a_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=2.0, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [True, True, False]
    assert bucket.take(0.5) and not bucket.take(0.5)
    assert bucket.take(10.0) and bucket.take(10.0) and not bucket.take(10.0)  # capped at burst


def test_a_big_batch_is_parsed_in_slices_that_let_the_loop_run() -> None:
    heavy = _request("c", args={"pad": list(range(128)) * 400})  # malformed, ~50 KB each
    messages = [Message(CONTROL, heavy) for _ in range(200)]
    limiter = RateLimiter(global_burst=1000, client_burst=1000)

    async def main() -> tuple[int, float]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        started = time.perf_counter()
        parsed = await Intake(limiter, slice_s=0.002).parse(messages)
        elapsed = time.perf_counter() - started
        stop.set()
        await task
        assert parsed.refusals.total == 200
        return ticks, elapsed

    ticks, elapsed = asyncio.run(main())
    assert ticks >= min(20, elapsed / 0.004)  # the loop ran between slices, not once at the end


def test_refusals_are_written_once_per_kind_and_source_per_batch() -> None:
    conn = open_memory()
    refusals = Refusals()
    for i in range(50):
        refusals.add(SecurityKind.MALFORMED, "agent-1", f"bad {i}")
    for i in range(40):
        refusals.add(SecurityKind.OVERSIZED, f"agent-{i}", "big")
    conn.execute("BEGIN")
    refusals.record(conn, 1.0)
    conn.execute("COMMIT")
    rows = dict(conn.execute("SELECT kind, count FROM security_events").fetchall())
    # One row per kind counting every refused message, although malformed was written once
    # (50 in one batch) and oversized once per source plus one merged write for the sources
    # beyond the per-batch cap.
    assert rows == {"malformed": 50, "oversized": 40}
    detail = conn.execute(
        "SELECT last_detail FROM security_events WHERE kind = 'malformed'"
    ).fetchone()[0]
    assert detail.startswith("50 in one batch, the first: bad 0")
