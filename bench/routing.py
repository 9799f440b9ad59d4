"""Complexity routing: the cost it saves against always using the strongest model, and how
often a hard prompt goes to a cheap tier, on a fixed labelled prompt set.

Each prompt in ``bench/routing_prompts.jsonl`` is labelled easy, medium or hard by the
person who wrote it. The gateway's own router (the same code the ingress runs, with the
defaults of ``router_settings.complexity_router`` unless ``--config`` gives a file) plans
each one over a group of three deployments, one per tier; nothing is sent anywhere. Each
call is priced with the shipped price table: the prompt's estimated tokens in, and a fixed
assumed answer length per label out (``OUTPUT_TOKENS``), the same whichever model answers.

    .venv/bin/python bench/routing.py            # both price ladders, a Markdown report
    .venv/bin/python bench/routing.py --json

The "oracle" line prices each prompt at the tier its label asks for (easy: small, medium:
medium, hard: large): the saving a perfect classifier would make.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.pricing import PriceTable  # noqa: E402
from ingress.routing.router import Router  # noqa: E402
from schemas.config import Deployment, parse_config  # noqa: E402
from schemas.estimate import prompt_tokens  # noqa: E402
from schemas.usage import TokenUsage  # noqa: E402

PROMPTS = Path(__file__).resolve().parent / "routing_prompts.jsonl"
LABELS = ("easy", "medium", "hard")
IDEAL = {"easy": "small", "medium": "medium", "hard": "large"}
# The assumed answer length per label, in tokens (reasoning included).
OUTPUT_TOKENS = {"easy": 150, "medium": 600, "hard": 1500}
# Weakest first; every model is in core/prices.json.
LADDERS: dict[str, list[tuple[str, str]]] = {
    "openai": [("small", "openai/gpt-4o-mini"), ("medium", "openai/gpt-4.1-mini"),
               ("large", "openai/o3")],
    "anthropic": [("small", "anthropic/claude-haiku-4-5-20251001"),
                  ("medium", "anthropic/claude-sonnet-4-5-20250929"),
                  ("large", "anthropic/claude-opus-4-5-20251101")],
}


def load_prompts(path: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for row in rows:
        if row["label"] not in LABELS:
            raise SystemExit(f"{path}: {row['id']} has label {row['label']!r}")
    return rows


def ladder_config(ladder: list[tuple[str, str]], router_settings: dict[str, Any]) -> Any:
    return parse_config({
        "model_list": [{"model_name": "auto", "model_info": {"tier": tier},
                        "litellm_params": {"model": model, "api_key": "unused"}}
                       for tier, model in ladder],
        "router_settings": {**router_settings, "routing_strategy": "complexity"},
    }, {})


def _cost(prices: PriceTable, d: Deployment, prompt: int, output: int) -> Decimal:
    cost = prices.cost(d.provider, d.upstream_model,
                       TokenUsage(prompt_tokens=prompt, completion_tokens=output))
    if cost is None:
        raise SystemExit(f"no price for {d.provider}/{d.upstream_model}")
    return cost


def run(ladder: list[tuple[str, str]], prompts: list[dict[str, Any]],
        router_settings: dict[str, Any]) -> dict[str, Any]:
    config = ladder_config(ladder, router_settings)
    router, prices = Router(config), PriceTable.default()
    by_tier = {d.tier: d for d in config.deployments}
    strongest = by_tier[ladder[-1][0]]
    routed = always = oracle = Decimal(0)
    matrix: Counter[tuple[str, str]] = Counter()
    misses: list[dict[str, Any]] = []
    for row in prompts:
        body = {"model": "auto", **row["request"]}
        plan = router.plan("auto", body)
        chosen, label = plan[0], row["label"]
        assert plan.route is not None
        assert chosen.tier is not None
        tokens, output = prompt_tokens(body), OUTPUT_TOKENS[label]
        routed += _cost(prices, chosen, tokens, output)
        always += _cost(prices, strongest, tokens, output)
        oracle += _cost(prices, by_tier[IDEAL[label]], tokens, output)
        matrix[(label, chosen.tier)] += 1
        if chosen.tier != IDEAL[label]:
            misses.append({"id": row["id"], "label": label, "tier": chosen.tier,
                           "reason": plan.route.reason})
    hard = sum(1 for r in prompts if r["label"] == "hard")
    return {
        "ladder": [model for _, model in ladder],
        "prompts": len(prompts),
        "cost_routed": routed, "cost_always_strongest": always, "cost_oracle": oracle,
        "saved_pct": float((1 - routed / always) * 100),
        "oracle_saved_pct": float((1 - oracle / always) * 100),
        "hard_to_small": matrix[("hard", "small")], "hard_below_large":
            hard - matrix[("hard", "large")], "hard": hard,
        "easy_to_large": matrix[("easy", "large")],
        "matrix": {label: {tier: matrix[(label, tier)] for tier, _ in ladder}
                   for label in LABELS},
        "misses": misses,
    }


def report(results: dict[str, dict[str, Any]]) -> str:
    out = ["| ladder (small / medium / large) | always strongest | routed | saved | "
           "oracle saved | hard to small | hard below large | easy to large |",
           "|---|---|---|---|---|---|---|---|"]
    for r in results.values():
        out.append(
            f"| {' / '.join(m.split('/', 1)[1] for m in r['ladder'])} "
            f"| ${r['cost_always_strongest']:.4f} | ${r['cost_routed']:.4f} "
            f"| {r['saved_pct']:.1f} % | {r['oracle_saved_pct']:.1f} % "
            f"| {r['hard_to_small']} of {r['hard']} | {r['hard_below_large']} of {r['hard']} "
            f"| {r['easy_to_large']} |")
    first = next(iter(results.values()))
    out += ["", "Tier chosen, by label (the same for every ladder: tiers, not prices, decide):",
            "", "| label | small | medium | large |", "|---|---|---|---|"]
    for label, row in first["matrix"].items():
        out.append(f"| {label} | {row['small']} | {row['medium']} | {row['large']} |")
    out += ["", "Prompts not sent to the tier of their label:", ""]
    out += [f"- {m['id']} -> {m['tier']}: {m['reason']}" for m in first["misses"]]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=Path, default=PROMPTS)
    parser.add_argument("--config", type=Path, default=None,
                        help="a YAML file whose router_settings.complexity_router to use")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    settings: dict[str, Any] = {}
    if args.config is not None:
        import yaml

        raw = yaml.safe_load(args.config.read_text()) or {}
        found = (raw.get("router_settings") or {}).get("complexity_router")
        settings = {"complexity_router": found} if found else {}
    prompts = load_prompts(args.prompts)
    results = {name: run(ladder, prompts, settings) for name, ladder in LADDERS.items()}
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    else:
        counts = Counter(r["label"] for r in prompts)
        print(f"{len(prompts)} prompts ({', '.join(f'{n} {lb}' for lb, n in counts.items())}); "
              f"assumed output tokens {OUTPUT_TOKENS}\n")
        print(report(results))


if __name__ == "__main__":
    main()
