from __future__ import annotations

import pytest

from ingress.routing.retry import MIN_ATTEMPT_SECONDS, RetryPolicy
from schemas.config import RouterSettings, parse_config
from schemas.errors import ErrorInfo, ErrorKind


def err(kind: ErrorKind, retry_after: float | None = None) -> ErrorInfo:
    return ErrorInfo.of(kind, "x", retry_after=retry_after)


def test_transient_errors_retry_num_retries_times_and_client_errors_never() -> None:
    policy = RetryPolicy(num_retries=2)
    for kind in (ErrorKind.RATE_LIMIT, ErrorKind.SERVER, ErrorKind.TIMEOUT,
                 ErrorKind.CONNECTION, ErrorKind.OVERLOADED):
        assert policy.retries_for(kind) == 2
    for kind in (ErrorKind.INVALID_REQUEST, ErrorKind.AUTHENTICATION,
                 ErrorKind.CONTEXT_LENGTH, ErrorKind.NO_WORKER):
        assert policy.retries_for(kind) == 0


def test_retry_policy_names_from_litellm_override_per_error_class() -> None:
    raw = {"model_list": [], "router_settings": {"num_retries": 2, "retry_policy": {
        "RateLimitErrorRetries": 5, "InternalServerErrorRetries": 0,
        "BadRequestErrorRetries": 1}}}
    policy = RetryPolicy.from_settings(parse_config(raw, {}).router)
    assert policy.retries_for(ErrorKind.RATE_LIMIT) == 5
    assert policy.retries_for(ErrorKind.SERVER) == 0
    assert policy.retries_for(ErrorKind.OVERLOADED) == 0
    assert policy.retries_for(ErrorKind.INVALID_REQUEST) == 1
    assert policy.retries_for(ErrorKind.TIMEOUT) == 2


def test_backoff_doubles_with_equal_jitter_up_to_the_cap() -> None:
    policy = RetryPolicy(num_retries=10, base=0.5, cap=4.0)
    low = [policy.backoff(n, err(ErrorKind.SERVER), lambda: 0.0) for n in range(1, 6)]
    high = [policy.backoff(n, err(ErrorKind.SERVER), lambda: 1.0) for n in range(1, 6)]
    assert low == [0.25, 0.5, 1.0, 2.0, 2.0]
    assert high == [0.5, 1.0, 2.0, 4.0, 4.0]


def test_upstream_retry_after_and_configured_minimum_are_honoured() -> None:
    policy = RetryPolicy(num_retries=1, min_wait=1.5)
    assert policy.backoff(1, err(ErrorKind.SERVER), lambda: 1.0) == 1.5
    assert policy.backoff(1, err(ErrorKind.RATE_LIMIT, 7.0), lambda: 1.0) == 7.0


def test_no_retry_when_the_wait_would_cross_the_deadline() -> None:
    policy = RetryPolicy(num_retries=3)
    limited = err(ErrorKind.RATE_LIMIT, 7.0)
    assert policy.next_wait(0, limited, remaining=5.0) is None
    assert policy.next_wait(0, limited, remaining=7.0 + MIN_ATTEMPT_SECONDS + 0.1) == 7.0
    assert policy.next_wait(0, limited, remaining=None) == 7.0


def test_retries_stop_when_the_error_class_has_used_its_count() -> None:
    policy = RetryPolicy(num_retries=2)
    server = err(ErrorKind.SERVER)
    assert policy.next_wait(0, server, None, lambda: 0.5) is not None
    assert policy.next_wait(1, server, None, lambda: 0.5) is not None
    assert policy.next_wait(2, server, None, lambda: 0.5) is None
    assert policy.next_wait(0, err(ErrorKind.INVALID_REQUEST), None) is None


def test_default_settings_do_not_retry() -> None:
    assert RetryPolicy.from_settings(RouterSettings()).next_wait(
        0, err(ErrorKind.SERVER), None) is None


@pytest.mark.parametrize("bad", [{"NoSuchErrorRetries": 1}, {"RateLimitErrorRetries": -1}])
def test_an_unknown_retry_policy_is_a_config_error(bad: dict[str, int]) -> None:
    from schemas.config import ConfigError

    with pytest.raises(ConfigError):
        parse_config({"model_list": [], "router_settings": {"retry_policy": bad}}, {})
