"""``aigw keys …`` and ``aigw teams …``: the admin API of a running gateway, from a shell.

Every command is one HTTP call with the master key; the answer is printed as JSON on
stdout, or the gateway's error JSON on stderr with exit status 1. Options that set a field
on ``update`` accept ``none`` to clear it (``--rpm none``); options left out are left as
they are.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:4000"
_LIMITS = ("rpm", "tpm", "max_parallel", "daily_budget_usd", "monthly_budget_usd")
_FIELDS = ("alias", "team_id", "allowed_models", "expires_at", "metadata", "role")
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

Command = Callable[[argparse.Namespace], int]


# ---- option parsing ----------------------------------------------------------------------


def _none_or(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_or_none(text: str) -> Any:
        return None if text.lower() == "none" else parse(text)

    parse_or_none.__name__ = getattr(parse, "__name__", "value")
    return parse_or_none


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text}")
    return value


def _usd(text: str) -> str:
    # Sent as a string so the amount reaches the gateway's Decimal without a float on the way.
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not an amount: {text}") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text}")
    return str(value)


def _timestamp(text: str) -> str:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text}") from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a time zone, e.g. {text}Z or {text}+00:00")
    return when.isoformat()


def _duration(text: str) -> timedelta:
    match = _DURATION.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration like 30d, 12h, 15m: {text}")
    return timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2]])


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE: {text}")
    return name, value


def _connection_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--url", default=None,
                         help=f"gateway base URL (env AIGW_URL, default {DEFAULT_URL})")
    options.add_argument("--master-key", "--admin-key", dest="master_key", default=None,
                         help="the master key, or a team admin key for its team's keys "
                              "(env AIGW_MASTER_KEY or AIGW_ADMIN_KEY)")
    options.add_argument("--timeout", type=float, default=10.0)
    return options


def _common_fields(updating: bool) -> argparse.ArgumentParser:
    """Options shared by keys and teams. Every one is left out of the namespace unless
    given, so ``update`` sends only what was asked for."""
    fields = argparse.ArgumentParser(add_help=False)
    unset = argparse.SUPPRESS
    fields.add_argument("--alias", default=unset, type=_none_or(str) if updating else str)
    fields.add_argument("--model", dest="allowed_models", action="append", default=unset,
                        metavar="MODEL", help="a model alias it may use; repeat for more")
    fields.add_argument("--meta", dest="metadata", action="append", type=_pair, default=unset,
                        metavar="KEY=VALUE", help="metadata; repeat for more")
    limit_int = _none_or(_count) if updating else _count
    limit_usd = _none_or(_usd) if updating else _usd
    fields.add_argument("--rpm", type=limit_int, default=unset, help="requests per minute")
    fields.add_argument("--tpm", type=limit_int, default=unset, help="tokens per minute")
    fields.add_argument("--max-parallel", type=limit_int, default=unset)
    fields.add_argument("--daily-budget", dest="daily_budget_usd", type=limit_usd,
                        default=unset, metavar="USD")
    fields.add_argument("--monthly-budget", dest="monthly_budget_usd", type=limit_usd,
                        default=unset, metavar="USD")
    if updating:
        fields.add_argument("--all-models", dest="allowed_models", action="store_const",
                            const=[], default=unset,
                            help="clear the model list: every model is allowed")
        fields.add_argument("--no-meta", dest="metadata", action="store_const", const=[],
                            default=unset, help="clear the metadata")
    return fields


def _key_fields(updating: bool) -> argparse.ArgumentParser:
    fields = argparse.ArgumentParser(add_help=False)
    unset = argparse.SUPPRESS
    fields.add_argument("--team", dest="team_id", default=unset)
    fields.add_argument("--role", choices=("user", "team_admin"), default=unset,
                        help="team_admin: the key also manages its team's keys (master key "
                             "only)")
    expiry = fields.add_mutually_exclusive_group()
    expiry.add_argument("--expires-at", type=_timestamp, default=unset, metavar="ISO8601")
    expiry.add_argument("--expires-in", type=_duration, default=unset, metavar="DURATION",
                        help="e.g. 30d, 12h, 15m")
    if updating:
        fields.add_argument("--no-team", dest="team_id", action="store_const", const=None,
                            default=unset)
        expiry.add_argument("--no-expiry", dest="expires_at", action="store_const", const=None,
                            default=unset)
    return fields


def _body(args: argparse.Namespace) -> dict[str, Any]:
    given = vars(args)
    body: dict[str, Any] = {f: given[f] for f in _FIELDS if f in given}
    if "expires_in" in given:
        body["expires_at"] = (datetime.now(UTC) + given["expires_in"]).isoformat()
    if "metadata" in body:
        body["metadata"] = dict(body["metadata"])
    limits = {f: given[f] for f in _LIMITS if f in given}
    if limits:
        body["limits"] = limits
    return body


# ---- HTTP --------------------------------------------------------------------------------


def admin_key(given: str | None) -> str | None:
    """The key the admin commands send: the option, else the master key's variable, else
    a team admin key's."""
    return given or os.environ.get("AIGW_MASTER_KEY") or os.environ.get("AIGW_ADMIN_KEY")


def _call(args: argparse.Namespace, method: str, path: str,
          body: dict[str, Any] | None = None, params: dict[str, Any] | None = None) -> int:
    key = admin_key(args.master_key)
    if not key:
        sys.stderr.write("aigw: no admin key: pass --master-key (or --admin-key), or set "
                         "AIGW_MASTER_KEY or AIGW_ADMIN_KEY\n")
        return 2
    url = (args.url or os.environ.get("AIGW_URL") or DEFAULT_URL).rstrip("/")
    try:
        with httpx.Client(base_url=url, timeout=args.timeout) as client:
            response = client.request(method, "/admin" + path, json=body, params=params,
                                      headers={"authorization": f"Bearer {key}"})
    except httpx.HTTPError as exc:
        sys.stderr.write(f"aigw: cannot reach the gateway at {url}: {exc}\n")
        return 1
    try:
        text = json.dumps(response.json(), indent=2)
    except ValueError:
        text = response.text
    (sys.stdout if response.is_success else sys.stderr).write(text + "\n")
    return 0 if response.is_success else 1


# ---- commands ----------------------------------------------------------------------------


def keys_create(args: argparse.Namespace) -> int:
    return _call(args, "POST", "/keys", _body(args))


def keys_list(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"include_revoked": str(args.include_revoked).lower()}
    if args.team_id:
        params["team_id"] = args.team_id
    return _call(args, "GET", "/keys", params=params)


def keys_get(args: argparse.Namespace) -> int:
    return _call(args, "GET", f"/keys/{args.id}")


def keys_update(args: argparse.Namespace) -> int:
    return _call(args, "PATCH", f"/keys/{args.id}", _body(args))


def keys_rotate(args: argparse.Namespace) -> int:
    return _call(args, "POST", f"/keys/{args.id}/rotate", {"grace_seconds": args.grace_seconds})


def keys_revoke(args: argparse.Namespace) -> int:
    return _call(args, "DELETE", f"/keys/{args.id}")


def teams_create(args: argparse.Namespace) -> int:
    return _call(args, "POST", "/teams", _body(args))


def teams_list(args: argparse.Namespace) -> int:
    return _call(args, "GET", "/teams")


def teams_get(args: argparse.Namespace) -> int:
    return _call(args, "GET", f"/teams/{args.id}")


def teams_update(args: argparse.Namespace) -> int:
    return _call(args, "PATCH", f"/teams/{args.id}", _body(args))


def teams_delete(args: argparse.Namespace) -> int:
    return _call(args, "DELETE", f"/teams/{args.id}")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``keys`` and ``teams`` to the ``aigw`` parser."""
    conn = _connection_options()

    keys = subparsers.add_parser("keys", help="manage virtual keys of a running gateway")
    key_cmds = keys.add_subparsers(dest="keys_command", required=True)
    create = key_cmds.add_parser("create", help="create a key; prints its secret once",
                                 parents=[conn, _common_fields(False), _key_fields(False)])
    create.set_defaults(func=keys_create)
    listing = key_cmds.add_parser("list", help="list keys", parents=[conn])
    listing.add_argument("--team", dest="team_id", default=None)
    listing.add_argument("--include-revoked", action="store_true")
    listing.set_defaults(func=keys_list)
    get = key_cmds.add_parser("get", help="show one key", parents=[conn])
    get.add_argument("id")
    get.set_defaults(func=keys_get)
    update = key_cmds.add_parser("update", help="change a key",
                                 parents=[conn, _common_fields(True), _key_fields(True)])
    update.add_argument("id")
    update.set_defaults(func=keys_update)
    rotate = key_cmds.add_parser("rotate", help="new secret; the old one works for a grace period",
                                 parents=[conn])
    rotate.add_argument("id")
    rotate.add_argument("--grace-seconds", type=_count, default=0)
    rotate.set_defaults(func=keys_rotate)
    revoke = key_cmds.add_parser("revoke", help="revoke a key for good", parents=[conn])
    revoke.add_argument("id")
    revoke.set_defaults(func=keys_revoke)

    teams = subparsers.add_parser("teams", help="manage teams of a running gateway")
    team_cmds = teams.add_subparsers(dest="teams_command", required=True)
    team_cmds.add_parser("create", help="create a team",
                         parents=[conn, _common_fields(False)]).set_defaults(func=teams_create)
    team_cmds.add_parser("list", help="list teams", parents=[conn]).set_defaults(func=teams_list)
    for name, func, text in (("get", teams_get, "show one team"),
                             ("delete", teams_delete, "delete a team without active keys")):
        command = team_cmds.add_parser(name, help=text, parents=[conn])
        command.add_argument("id")
        command.set_defaults(func=func)
    team_update = team_cmds.add_parser("update", help="change a team",
                                       parents=[conn, _common_fields(True)])
    team_update.add_argument("id")
    team_update.set_defaults(func=teams_update)
