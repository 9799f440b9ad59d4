"""Admission rate limits: requests and tokens per minute over a sliding window, parallel
slots, the refusing scope, duplicate request ids, and the OpenAI rate-limit headers.

Run against both stores, Redis (a real server) and in-process, each test with its own
scope ids and a clock that starts on a minute boundary."""

from __future__ import annotations

import re

import pytest

from ingress.admission import (
    Admission,
    AdmissionPolicy,
    DuplicateRequest,
    Limit,
    Scope,
    refusal_error,
)
from tests.ingress.admission_fixtures import (
    USD,
    admission_store,  # noqa: F401 - the ``admission`` fixture, one per store
    ask,
    at,
    reservation,
    uid,
)

# --- rate limits ---------------------------------------------------------------------


async def test_rpm_refuses_the_request_past_the_limit_with_retry_after(
    admission: Admission,
) -> None:
    key = Scope("key", uid(), rpm=3, label="ci-bot")
    for _ in range(3):
        assert (await admission.admit(ask([key], 10))).allowed
    refused = await admission.admit(ask([key], 10))
    assert not refused.allowed
    assert refused.refusal is not None
    assert refused.refusal.limit is Limit.REQUESTS
    assert refused.reason == "key ci-bot: requests"
    # All three in the current bucket: roll over (50 s), then decay until 3*(1-t/60)+1 <= 3.
    assert refused.retry_after == 70.0
    assert refused.headers["retry-after"] == "70"
    assert not (await admission.admit(ask([key], 79.999))).allowed
    assert (await admission.admit(ask([key], 80))).allowed


async def test_sliding_window_blocks_a_burst_across_the_minute_boundary(
    admission: Admission,
) -> None:
    key = Scope("key", uid(), rpm=10)
    for _ in range(10):
        assert (await admission.admit(ask([key], 59))).allowed
    # A fixed window would allow ten more at 60 s; the previous minute still weighs 10.
    assert not (await admission.admit(ask([key], 61))).allowed
    # Halfway through the next minute half of it has slid out.
    allowed = [(await admission.admit(ask([key], 90))).allowed for _ in range(7)]
    assert allowed == [True] * 5 + [False] * 2


async def test_tpm_reserves_the_estimate_and_settle_corrects_it(admission: Admission) -> None:
    key = Scope("key", uid(), tpm=1000)
    first = await admission.admit(ask([key], 5, tokens=400))
    assert (await admission.admit(ask([key], 5, tokens=400))).allowed
    third = await admission.admit(ask([key], 6, tokens=400))
    assert not third.allowed
    assert third.refusal is not None
    assert third.refusal.limit is Limit.TOKENS
    assert third.refusal.used == 800
    assert third.refusal.requested == 400
    assert third.retry_after is not None and third.retry_after > 0
    # The first request used 100 tokens, not 400: 300 come back.
    assert (await admission.settle(reservation(first), 100, None, now=at(7))).settled
    again = await admission.admit(ask([key], 8, tokens=400))
    assert again.allowed
    assert again.headers["x-ratelimit-remaining-tokens"] == "100"


async def test_a_request_larger_than_the_tpm_limit_is_told_not_to_retry(
    admission: Admission,
) -> None:
    key = Scope("key", uid(), tpm=100)
    refused = await admission.admit(ask([key], 0, tokens=101))
    assert refused.refusal is not None
    assert refused.refusal.limit is Limit.TOKENS
    assert refused.retry_after is None
    assert refused.headers["x-should-retry"] == "false"
    error = refusal_error(refused)
    assert error.status == 429
    assert error.type == "tokens"
    assert "alone exceeds the limit" in error.message


async def test_max_parallel_holds_a_slot_until_settle_or_expiry(admission: Admission) -> None:
    key = Scope("key", uid(), max_parallel=2)
    one = await admission.admit(ask([key], 0))
    assert (await admission.admit(ask([key], 0))).allowed
    third = await admission.admit(ask([key], 1))
    assert third.refusal is not None
    assert third.refusal.limit is Limit.PARALLEL
    assert third.refusal.used == 2
    assert third.retry_after == 1.0
    assert refusal_error(third).type == "requests"
    await admission.settle(reservation(one), 10, USD(0), now=at(2))
    assert (await admission.admit(ask([key], 2))).allowed
    assert not (await admission.admit(ask([key], 3))).allowed
    # Nobody settles: a crashed ingress. The slots free after the hold ttl (15 min).
    hold = AdmissionPolicy().hold_ttl.total_seconds()
    assert not (await admission.admit(ask([key], hold - 1))).allowed
    assert (await admission.admit(ask([key], hold + 3))).allowed


async def test_the_first_refusing_scope_is_reported_and_nothing_is_counted(
    admission: Admission,
) -> None:
    key = Scope("key", uid(), rpm=100, tpm=10_000)
    team = Scope("team", uid(), rpm=1, label="search")
    assert (await admission.admit(ask([key, team], 0, tokens=100))).allowed
    refused = await admission.admit(ask([key, team], 1, tokens=100))
    assert refused.reason == "team search: requests"
    status = await admission.status([key], now=at(1))
    # The refused request left no trace on the key that would have let it through.
    assert status["scopes"][0]["requests"]["used"] == 1
    assert status["scopes"][0]["tokens"]["used"] == 100


async def test_a_request_id_cannot_hold_two_reservations(admission: Admission) -> None:
    key = Scope("key", uid(), max_parallel=5)
    rid = uid()
    first = await admission.admit(ask([key], 0, request_id=rid))
    with pytest.raises(DuplicateRequest):
        await admission.admit(ask([key], 1, request_id=rid))
    await admission.settle(reservation(first), 10, None, now=at(2))
    assert (await admission.admit(ask([key], 3, request_id=rid))).allowed


# --- headers -------------------------------------------------------------------------

GO_DURATION = re.compile(r"^(\d+h)?(\d+m)?(\d+(\.\d+)?s|\d+ms)$")


async def test_headers_describe_the_tightest_scope_in_openai_format(
    admission: Admission,
) -> None:
    key = Scope("key", uid(), rpm=60, tpm=1000)
    team = Scope("team", uid(), rpm=500, tpm=400)
    decision = await admission.admit(ask([key, team], 15, tokens=100))
    assert decision.headers == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "59",
        # Back to a full window once this minute rolls over and the next one passes.
        "x-ratelimit-reset-requests": "1m45s",
        "x-ratelimit-limit-tokens": "400",
        "x-ratelimit-remaining-tokens": "300",
        "x-ratelimit-reset-tokens": "1m45s",
    }
    assert all(GO_DURATION.match(v) for k, v in decision.headers.items() if "reset" in k)
    refused = await admission.admit(ask([key, team], 16, tokens=350))
    assert refused.headers["x-ratelimit-remaining-tokens"] == "300"
    assert refused.headers["retry-after"] == str(int(refused.headers["retry-after"]))
    assert int(refused.headers["retry-after-ms"]) > 0


async def test_scopes_without_rate_limits_send_no_rate_limit_headers(
    admission: Admission,
) -> None:
    decision = await admission.admit(ask([Scope("key", uid())], 0))
    assert decision.allowed
    assert decision.headers == {}
