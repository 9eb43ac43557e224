"""Refused input, counted: the kinds of ``security.*`` events and the lease tokens.

Anything a stranger on the broker can send that nasd refuses (a forged or stale result, a flood,
a malformed message) is logged as ``security.<kind>`` and counted per kind in the
``security_events`` table, which ``nasd status`` shows. Counting changes nothing else: refused
input never reaches the trials, results or strategies.

A lease token is ``HMAC-SHA256(lease secret, "<job_id>:<epoch>")`` (32 hex characters). The
daemon sends it in ``trial.assign`` and a result must echo it, so a client that can publish on an
agent's topic but cannot read its assignments cannot finish that agent's jobs, even on a broker
without ACLs. The secret is made once per database, so tokens survive restarts unchanged.
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from enum import StrEnum

import structlog

from nasd.store import repo

log = structlog.get_logger("nasd.security")

TOKEN_CHARS = 32
"""Length of a lease token in hex characters (128 bits)."""


class SecurityKind(StrEnum):
    """Why an input was refused (the ``<kind>`` of a ``security.<kind>`` event)."""

    MALFORMED = "malformed"  # not a valid v1 message for its topic
    OVERSIZED = "oversized"  # payload larger than its topic allows
    RATE_LIMITED = "rate_limited"  # too many requests from one client
    BAD_TOKEN = "bad_token"  # a result whose token is not its lease's
    WRONG_AGENT = "wrong_agent"  # a result from an agent that does not hold that lease
    NEVER_ISSUED = "never_issued"  # a result for an epoch that was never leased
    UNKNOWN_JOB = "unknown_job"  # a result for a job this database never proposed
    UNKNOWN_AGENT = "unknown_agent"  # ready/offline from an agent never seen online
    AGENT_LIMIT = "agent_limit"  # a new agent beyond the number the daemon tracks
    TRAINER_NOT_OFFERED = "trainer_not_offered"  # a submitted trainer no online agent offers


def lease_token(secret: bytes, job_id: str, epoch: int) -> str:
    """The token of lease ``(job_id, epoch)`` under ``secret``."""
    digest = hmac.new(secret, f"{job_id}:{epoch}".encode(), hashlib.sha256).hexdigest()
    return digest[:TOKEN_CHARS]


def token_matches(secret: bytes, job_id: str, epoch: int, token: object) -> bool:
    """True if ``token`` is the token of ``(job_id, epoch)`` (constant-time comparison)."""
    return isinstance(token, str) and hmac.compare_digest(
        token.encode(), lease_token(secret, job_id, epoch).encode()
    )


def note(
    conn: sqlite3.Connection,
    kind: SecurityKind,
    source: str | None,
    detail: str,
    now: float,
    count: int = 1,
) -> None:
    """Log ``security.<kind>`` and count ``count`` of it (inside the caller's transaction)."""
    log.warning(
        f"security.{kind}", source=source, count=count, detail=detail[: repo.MAX_DETAIL_CHARS]
    )
    repo.note_security(conn, str(kind), source, detail, now, count)
