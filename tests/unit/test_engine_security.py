"""The daemon's own checks on results (issue 6, defect 4): lease tokens, lease holders, epochs.

Every refusal is asserted the same way: nothing stored, no ack, the right ``security_events``
counter incremented, and the trial exactly where it was.
"""

from __future__ import annotations

import pytest

from nasd.core.wire import decode, encode
from nasd.engine import Inbound
from nasd.engine.security import lease_token
from nasd.errors import WireError
from tests.unit.engine_harness import Harness, assigns, config, of_type, reply, result, token_of

FORGED = "f" * 32


def running_job(h: Harness, budget: int = 2) -> dict:
    """Agent ``a`` (1 slot) holds the first trial; agent ``b`` finished the second one."""
    h.submit(config(budget=budget))
    job = assigns(h.online("a", slots=1))[0]
    h.online("b", slots=1)
    h.apply(Inbound("trial.result", "b", h.result("exp:1", 1)))  # b finishes its own job
    return job


def assert_refused(h: Harness, out: list, kind: str, trial_status: str = "running") -> None:
    assert of_type(out, "trial.ack") == []
    assert h.security() == {kind: 1}
    assert h.query("SELECT status FROM trials WHERE job_id = 'exp:0'") == [(trial_status,)]
    assert h.query("SELECT COUNT(*) FROM results WHERE job_id = 'exp:0'") == [(0,)]


def test_assignments_and_cancels_carry_the_lease_token(h: Harness) -> None:
    h.submit(config(budget=1))
    job = assigns(h.online("a", slots=1))[0]
    assert token_of(job) == h.token("exp:0", 1) and len(token_of(job)) == 32
    assert token_of(job) != h.token("exp:0", 2)
    out = h.apply(advance=11)
    (cancel,) = of_type(out, "trial.cancel")
    assert cancel.body == {"job_id": "exp:0", "epoch": 1, "token": token_of(job)}
    resent = h.engine.assignments_to_resend()
    assert [m.body["token"] for m in resent] == [h.token("exp:0", 2)]
    for message in (*of_type(out, "trial.assign"), cancel):  # valid wire messages
        assert decode(encode(message.type, message.body)).body == message.body


def test_a_result_with_a_forged_token_on_the_holders_topic_is_refused(h: Harness) -> None:
    running_job(h)
    out = h.apply(Inbound("trial.result", "a", result("exp:0", 1, FORGED)))
    assert_refused(h, out, "bad_token")
    assert h.engine.experiments["exp"].finished == 1  # b's result only


def test_a_result_from_an_agent_that_does_not_hold_the_lease_is_refused(h: Harness) -> None:
    job = running_job(h)
    out = h.apply(Inbound("trial.result", "b", reply(job)))  # right token, wrong topic
    assert_refused(h, out, "wrong_agent")


def test_a_result_for_an_epoch_never_leased_is_refused(h: Harness) -> None:
    running_job(h)
    token = h.token("exp:0", 7)  # even a correctly keyed token
    out = h.apply(Inbound("trial.result", "a", result("exp:0", 7, token)))
    assert_refused(h, out, "never_issued")


def test_a_forged_release_neither_requeues_the_job_nor_drains_the_agent(h: Harness) -> None:
    running_job(h, budget=3)
    out = h.apply(Inbound("trial.result", "a", result("exp:0", 1, FORGED, status="released")))
    assert_refused(h, out, "bad_token")
    assert h.query("SELECT draining FROM agents WHERE name = 'a'") == [(0,)]
    assert not h.engine.ledger.agent("a").draining


def test_a_forged_failure_uses_no_attempt(h: Harness) -> None:
    running_job(h)
    out = h.apply(Inbound("trial.result", "b", h.result("exp:0", 1, status="failed")))
    assert_refused(h, out, "wrong_agent")
    assert h.query("SELECT attempts, epoch FROM trials WHERE job_id = 'exp:0'") == [(0, 1)]


def test_a_duplicate_is_acked_only_if_its_token_and_agent_check_out(h: Harness) -> None:
    job = running_job(h)
    h.apply(Inbound("trial.result", "a", reply(job)))
    assert h.query("SELECT status FROM trials WHERE job_id = 'exp:0'") == [("succeeded",)]
    out = h.apply(Inbound("trial.result", "a", reply(job, val_acc=0.99)))
    assert [m.body for m in of_type(out, "trial.ack")] == [
        {"job_id": "exp:0", "epoch": 1, "token": token_of(job)}
    ]
    forged = h.apply(Inbound("trial.result", "a", result("exp:0", 1, FORGED)))
    misdirected = h.apply(Inbound("trial.result", "b", reply(job)))
    assert of_type(forged, "trial.ack") == of_type(misdirected, "trial.ack") == []
    assert h.security() == {"bad_token": 1, "wrong_agent": 1}
    assert h.query("SELECT metrics FROM results WHERE job_id = 'exp:0'") == [('{"val_acc": 0.5}',)]


def test_a_result_for_an_unknown_job_is_acked_with_its_token_and_stores_nothing(
    h: Harness,
) -> None:
    h.submit(config(budget=1))
    h.online("a", slots=1)
    old_token = lease_token(b"another database", "old:3", 2)
    out = h.apply(Inbound("trial.result", "a", result("old:3", 2, old_token)))
    assert [m.body for m in of_type(out, "trial.ack")] == [
        {"job_id": "old:3", "epoch": 2, "token": old_token}
    ]
    assert h.security() == {"unknown_job": 1}
    assert h.query("SELECT COUNT(*) FROM results") == [(0,)]
    assert h.query("SELECT COUNT(*) FROM trials WHERE job_id = 'old:3'") == [(0,)]


def test_a_late_result_from_its_own_older_lease_still_wins(h: Harness) -> None:
    h.submit(config(budget=1))
    first = assigns(h.online("a", slots=1))[0]
    h.online("b", slots=1)
    second = assigns(h.apply(advance=11))[0]
    assert second["epoch"] == 2 and token_of(second) != token_of(first)
    # The old epoch's token on the new holder's topic, and the new token for the old epoch: no.
    h.apply(Inbound("trial.result", "b", reply(first)))
    h.apply(Inbound("trial.result", "a", result("exp:0", 1, token_of(second))))
    assert h.security() == {"wrong_agent": 1, "bad_token": 1}
    out = h.apply(Inbound("trial.result", "a", reply(first)))
    assert of_type(out, "trial.ack")[0].body["token"] == token_of(first)
    assert [c.body["token"] for c in of_type(out, "trial.cancel")] == [token_of(second)]
    assert h.query("SELECT status, agent FROM trials") == [("succeeded", "a")]


@pytest.mark.parametrize("kind", ["trial.result", "trial.progress"])
def test_metric_values_beyond_1e15_are_refused_by_the_codec(kind: str) -> None:
    body: dict = (
        result("exp:0", 1, FORGED)
        if kind == "trial.result"
        else {"job_id": "exp:0", "epoch": 1, "token": FORGED, "step": 1, "total": 2, "metrics": {}}
    )
    for value in (1e15, -1e15, 0.5):
        encode(kind, {**body, "metrics": {"val_acc": value}})
    for value in (1e16, -1e16):
        with pytest.raises(WireError):
            encode(kind, {**body, "metrics": {"val_acc": value}})
