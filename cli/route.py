"""``aigw route explain REQUEST.json``: what the router would do with a request, without
sending it anywhere.

The request file is the JSON body a client would post to ``/v1/chat/completions``. The
config is ``--config``, else ``AIGW_CONFIG``, else the built-in one. Every deployment
counts as healthy and idle: this is the decision the scores and tiers make, not a guess at
the cooldowns of a running gateway.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from ingress.routing import complexity
from ingress.routing.router import Router
from schemas.config import ConfigError, Deployment, GatewayConfig, load_config


class Refused(Exception):
    """A request file or config the explanation cannot be made for."""


def _read_request(path: Path) -> dict[str, Any]:
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise Refused(f"cannot read {path}: {exc.strerror}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise Refused(f"{path} is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise Refused(f"{path}: expected a JSON object (a chat completions request body)")
    return body


def _price(router: Router, d: Deployment) -> str:
    value = router.price(d)
    if value is None:
        return "unpriced"
    return f"${format(value * 1_000_000, 'f').rstrip('0').rstrip('.') or '0'}/M in+out"


def explain(
    config: GatewayConfig, body: dict[str, Any], model: str | None = None,
) -> dict[str, Any]:
    """The decision for ``body`` as data: score, features, tier, plan, reason."""
    alias = model or body.get("model")
    if not isinstance(alias, str) or not alias:
        raise Refused("the request has no model (or pass --model)")
    router = Router(config)
    if alias not in router:
        raise Refused(f"model {alias!r} is not a model_name in the config "
                      f"(known: {', '.join(router.models)})")
    settings = config.router
    plan = router.plan(alias, body)
    decision = plan.route
    routed = decision is not None
    if decision is None:
        decision = complexity.decide(body, settings.complexity)
    chosen = plan[0]
    out: dict[str, Any] = {
        "model": alias,
        "routing_strategy": settings.routing_strategy,
        "by_complexity": routed,
        "score": decision.score,
        "features": decision.features.as_dict(),
        "contributions": decision.contributions,
        "tier": decision.tier,
        "plan": [{"deployment": d.id, "model": f"{d.provider}/{d.upstream_model}",
                  "tier": d.tier, "price": _price(router, d)} for d in plan],
        "chosen": chosen.id,
    }
    if routed:
        route = complexity.note(decision, chosen, settings.complexity)
        out["chosen_tier"], out["reason"] = route.tier, route.reason
        judge = router.classifier_for(alias)
        if judge is not None:  # never called here: its answer is not knowable offline
            out["classifier"] = judge
            out["reason"] += (f" (a running gateway asks the classifier {judge} first; a tier "
                              "it names replaces this one)")
    else:
        why = ("no deployment of the group declares a tier"
               if settings.by_complexity(alias) else
               f"routing_strategy is {settings.routing_strategy} and the group is not in "
               "complexity_router.model_groups")
        out["reason"] = f"not routed by complexity: {why}; {decision.reason}"
    return out


def _text(found: dict[str, Any]) -> str:
    features = " ".join(
        f"{k}={('/'.join(v) or '-') if isinstance(v, list | tuple) else v}"
        for k, v in found["features"].items())
    parts = ", ".join(f"{k} +{v:.2f}" for k, v in found["contributions"].items()) or "none"
    lines = [
        f"model:     {found['model']} (routing_strategy {found['routing_strategy']}"
        f"{', by complexity' if found['by_complexity'] else ''})",
        f"score:     {found['score']:.2f} -> tier {found['tier']}",
        f"features:  {features}",
        f"adds:      {parts}",
        "plan:",
        *(f"  {i}. {p['deployment']}  {p['model']}  tier {p['tier'] or '-'}  {p['price']}"
          for i, p in enumerate(found["plan"], 1)),
        f"chosen:    {found['chosen']}"
        + (f" (tier {found['chosen_tier']})" if "chosen_tier" in found else ""),
        f"reason:    {found['reason']}",
    ]
    return "\n".join(lines)


def cmd_explain(args: argparse.Namespace) -> int:
    path = args.config or os.environ.get("AIGW_CONFIG") or None
    try:
        config = load_config(str(path) if path else None, os.environ)
        found = explain(config, _read_request(args.request), args.model)
    except (ConfigError, Refused) as exc:
        sys.stderr.write(f"aigw: {exc}\n")
        return 2
    if args.json:
        sys.stdout.write(json.dumps(found, indent=2, default=_plain) + "\n")
    else:
        sys.stdout.write(_text(found) + "\n")
    return 0


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(type(value).__name__)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``route explain`` to the ``aigw`` parser."""
    route = subparsers.add_parser("route", help="explain routing decisions offline")
    cmds = route.add_subparsers(dest="route_command", required=True)
    explain_cmd = cmds.add_parser(
        "explain", help="print the complexity router's decision for a request file")
    explain_cmd.add_argument("request", type=Path, help="a chat completions request body (JSON)")
    explain_cmd.add_argument("--config", type=Path, default=None)
    explain_cmd.add_argument("--model", default=None, help="the alias, if not the body's")
    explain_cmd.add_argument("--json", action="store_true", help="print the decision as JSON")
    explain_cmd.set_defaults(func=cmd_explain)
