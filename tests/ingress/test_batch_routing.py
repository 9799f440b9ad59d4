"""Where a batch item's next attempt goes (:func:`ingress.batch.routing.choose`)."""

from __future__ import annotations

from ingress.batch.routing import MAX_MOVES, choose
from ingress.routing.health_board import HealthBoard
from ingress.routing.router import Router
from schemas.batch_admission import AdmitAsk
from schemas.config import Deployment, parse_config
from schemas.errors import ErrorInfo, ErrorKind

CONFIG = {
    "model_list": [
        {"model_name": "g", "litellm_params": {"model": "openai/a"}},
        {"model_name": "g", "litellm_params": {"model": "openai/b"}},
        {"model_name": "mixed", "litellm_params": {"model": "openai/m1"}},
        {"model_name": "mixed", "litellm_params": {"model": "anthropic/m2"}},
        {"model_name": "claude", "litellm_params": {"model": "anthropic/c"}},
        {"model_name": "backup", "litellm_params": {"model": "openai/backup"}},
        {"model_name": "long", "litellm_params": {"model": "openai/long"}},
    ],
    "router_settings": {
        "allowed_fails": 0, "cooldown_time": 60,
        "fallbacks": [{"claude": ["backup"]}, {"g": ["backup"]}],
        "context_window_fallbacks": [{"g": ["long"]}],
    },
}


def _router() -> Router:
    config = parse_config(CONFIG, {})
    return Router(config, health=HealthBoard(None, config.router, clock=lambda: 100.0))


def _by_model(router: Router, upstream: str) -> Deployment:
    return next(d for d in router.deployments if d.upstream_model == upstream)


def _ask(router: Router, alias: str, current: str, provider: str,
         **fields: object) -> AdmitAsk:
    return AdmitAsk(admission_id="r:0", deployment_id=_by_model(router, current).id,
                    body={}, model_alias=alias, provider=provider, **fields)  # type: ignore[arg-type]


def _chosen(router: Router, ask: AdmitAsk) -> tuple[str | None, str]:
    choice = choose(router, ask)
    return (choice.deployment.upstream_model if choice.deployment else None), choice.reason


SERVER = ErrorInfo.of(ErrorKind.SERVER, "boom")
BAD = ErrorInfo.of(ErrorKind.INVALID_REQUEST, "bad")
TOO_LONG = ErrorInfo.of(ErrorKind.CONTEXT_LENGTH, "too long")


def test_the_first_attempt_follows_the_strategy_not_the_submit_time_choice() -> None:
    router = _router()
    picks = {_chosen(router, _ask(router, "g", "a", "openai"))[0] for _ in range(4)}
    assert picks == {"a", "b"}  # round robin, whatever the item was queued with


def test_a_deployment_cooling_down_is_not_chosen() -> None:
    router = _router()
    router.health.failed(_by_model(router, "a").id, SERVER)
    assert {_chosen(router, _ask(router, "g", "a", "openai")) for _ in range(4)} == {
        ("b", "strategy")}


def test_after_a_failure_the_item_goes_to_a_sibling_then_to_the_fallbacks() -> None:
    router = _router()
    a, b = _by_model(router, "a").id, _by_model(router, "b").id
    assert _chosen(router, _ask(router, "g", "a", "openai", failed=(a,),
                                last_error=SERVER)) == ("b", "failover")
    assert _chosen(router, _ask(router, "g", "b", "openai", failed=(a, b),
                                last_error=SERVER)) == ("backup", "fallback:backup")


def test_a_bad_request_ends_the_item_and_a_long_context_takes_its_own_chain() -> None:
    router = _router()
    a = _by_model(router, "a").id
    assert _chosen(router, _ask(router, "g", "a", "openai", failed=(a,),
                                last_error=BAD)) == (None, "exhausted")
    assert _chosen(router, _ask(router, "g", "a", "openai", failed=(a,),
                                last_error=TOO_LONG)) == ("long", "fallback:long")


def test_when_everything_failed_transiently_a_retry_round_goes_on() -> None:
    router = _router()
    failed = tuple(d.id for d in router.deployments if d.upstream_model != "c")
    model, reason = _chosen(router, _ask(router, "g", "a", "openai", failed=failed,
                                         last_error=SERVER))
    assert reason == "retry" and model in ("a", "b")


def test_a_fallback_on_another_provider_is_chosen_and_a_moved_item_stays_put() -> None:
    router = _router()
    c = _by_model(router, "c").id
    assert _chosen(router, _ask(router, "claude", "c", "anthropic", failed=(c,),
                                last_error=SERVER)) == ("backup", "fallback:backup")
    # Handed to the openai workers, it keeps its deployment rather than go back to the
    # group's rotation.
    assert _chosen(router, _ask(router, "claude", "backup", "openai", failed=(c,),
                                moves=1)) == ("backup", "kept")


def test_past_the_move_limit_only_the_asking_providers_deployments_are_candidates() -> None:
    router = _router()
    m1 = _by_model(router, "m1").id
    # Its own deployment failed: the group's other one is anthropic's, out of reach now.
    picks = {_chosen(router, _ask(router, "mixed", "m1", "openai", moves=MAX_MOVES,
                                  failed=(m1,)))[0] for _ in range(4)}
    assert picks == {"m1"}
    assert {_chosen(router, _ask(router, "mixed", "m1", "openai"))[0]
            for _ in range(4)} == {"m1", "m2"}
    assert _chosen(router, _ask(router, "mixed", "m1", "openai", moves=MAX_MOVES,
                                failed=(m1,), last_error=SERVER)) == ("m1", "retry")


def test_a_fallback_the_key_may_not_use_is_skipped() -> None:
    router = _router()
    c = _by_model(router, "c").id
    ask = _ask(router, "claude", "c", "anthropic", failed=(c,), last_error=SERVER)
    assert choose(router, ask, lambda model: model != "backup").reason == "retry"
