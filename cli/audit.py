"""``aigw audit``: the audit log of a running gateway (``GET /admin/audit``), as a table or
as JSON, with the same filters and pagination as the API. Needs the master key."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import httpx

from cli.admin import DEFAULT_URL, admin_key
from schemas.audit import ACTIONS

_COLUMNS = ("time", "actor", "action", "target", "changes", "source_ip", "request_id")
_TARGET_KINDS = ("key", "team", "config", "batch")


def _value(value: Any) -> str:
    return "-" if value is None else json.dumps(value) if not isinstance(value, str) else value


def _changes(changes: dict[str, Any]) -> str:
    return "; ".join(f"{name}: {_value(c.get('before'))} -> {_value(c.get('after'))}"
                     for name, c in changes.items())


def rows(events: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for e in events:
        actor = e["actor"] + (f" ({e['actor_team_id']})" if e.get("actor_team_id") else "")
        out.append((e["ts"], actor, e["action"], f"{e['target']['kind']}:{e['target']['id']}",
                    _changes(e.get("changes") or {}), e.get("source_ip") or "-",
                    e["request_id"]))
    return out


def table(events: list[dict[str, Any]]) -> str:
    """The events as an aligned text table; long change lists are cut at 60 characters."""
    body = [tuple(c if len(c) <= 60 else c[:57] + "..." for c in r) for r in rows(events)]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h)
              for i, h in enumerate(_COLUMNS)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(_COLUMNS, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(line.rstrip() for line in lines)


def audit(args: argparse.Namespace) -> int:
    key = admin_key(args.master_key)
    if not key:
        sys.stderr.write("aigw: no admin key: pass --master-key (or --admin-key), or set "
                         "AIGW_MASTER_KEY or AIGW_ADMIN_KEY\n")
        return 2
    url = (args.url or os.environ.get("AIGW_URL") or DEFAULT_URL).rstrip("/")
    params = {name: getattr(args, name) for name in
              ("actor", "action", "target_kind", "target_id", "since", "until", "limit",
               "offset") if getattr(args, name) is not None}
    try:
        with httpx.Client(base_url=url, timeout=args.timeout) as client:
            response = client.get("/admin/audit", params=params,
                                  headers={"authorization": f"Bearer {key}"})
    except httpx.HTTPError as exc:
        sys.stderr.write(f"aigw: cannot reach the gateway at {url}: {exc}\n")
        return 1
    if not response.is_success:
        sys.stderr.write(response.text + "\n")
        return 1
    page = response.json()
    if args.json:
        sys.stdout.write(json.dumps(page, indent=2) + "\n")
        return 0
    sys.stdout.write(table(page["data"]) + "\n")
    if page.get("has_more"):
        sys.stdout.write(f"(more: --offset {page['offset'] + page['limit']})\n")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = subparsers.add_parser("audit", help="show the audit log of admin actions")
    cmd.add_argument("--url", default=None,
                     help=f"gateway base URL (env AIGW_URL, default {DEFAULT_URL})")
    cmd.add_argument("--master-key", "--admin-key", dest="master_key", default=None,
                     help="the master key, or a team admin key for its team's actions "
                          "(env AIGW_MASTER_KEY or AIGW_ADMIN_KEY)")
    cmd.add_argument("--timeout", type=float, default=10.0)
    cmd.add_argument("--actor", help="master, a key id, or signal:SIGUSR1")
    cmd.add_argument("--action", choices=ACTIONS)
    cmd.add_argument("--target-kind", choices=_TARGET_KINDS)
    cmd.add_argument("--target-id")
    cmd.add_argument("--since", metavar="ISO8601", help="from this time (with a time zone)")
    cmd.add_argument("--until", metavar="ISO8601", help="before this time (with a time zone)")
    cmd.add_argument("--limit", type=int, default=None, help="events per page (default 100)")
    cmd.add_argument("--offset", type=int, default=None)
    cmd.add_argument("--json", action="store_true", help="print the API's JSON")
    cmd.set_defaults(func=audit)
