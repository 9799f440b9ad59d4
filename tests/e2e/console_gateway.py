"""A gateway for the console tests: its own nats-server, an openai worker on the session's
fake OpenAI upstream, accounting, and an ingress under ``SERVER_ROOT_PATH`` when asked."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from cli.nats_server import NatsServer
from tests.harness import Gateway, write_config

MASTER_KEY = "sk-master-console"


@contextmanager
def console_gateway(work: Path, openai_url: str, root: str = "") -> Iterator[Gateway]:
    nats = NatsServer(work / "nats")
    nats.start()
    config = write_config(work / "config.yaml", {
        "model_list": [
            {"model_name": "gpt-4o-mini", "litellm_params": {
                "model": "openai/gpt-4o-mini", "api_base": openai_url + "/v1",
                "api_key": "os.environ/FAKE_OPENAI_KEY"}},
            {"model_name": "other-model", "litellm_params": {
                "model": "openai/gpt-4o-mini", "api_base": openai_url + "/v1",
                "api_key": "os.environ/FAKE_OPENAI_KEY"}},
        ],
        "general_settings": {"master_key": MASTER_KEY}})
    env = {"FAKE_OPENAI_KEY": "sk-fake", "AIGW_ACCOUNTING_BATCH_AGE": "0.2"}
    if root:
        env["SERVER_ROOT_PATH"] = root
    gateway = Gateway(nats_url=nats.url, config_path=config, log_dir=work, env=env)
    try:
        gateway.start_accounting(work / "data")
        gateway.start_worker("openai")
        gateway.start_ingress()
        gateway.wait_ready(60)
        yield gateway
    finally:
        gateway.stop()
        nats.stop()


def make_key(gateway: Gateway, **fields: object) -> tuple[str, str]:
    r = httpx.post(gateway.base_url + "/admin/keys", json=fields, timeout=10,
                   headers={"authorization": f"Bearer {MASTER_KEY}"})
    assert r.status_code in (200, 201), r.text
    return r.json()["id"], r.json()["secret"]


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:2000]
    return found[1]


def sign_in(client: httpx.Client, key: str, root: str = "") -> httpx.Response:
    """Sign ``client`` (holding cookies) in through the login form; the landing page."""
    page = client.get(f"{root}/ui/login")
    assert page.status_code == 200, page.text
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert token, page.text
    return client.post(f"{root}/ui/login", data={"login_token": token[1], "key": key},
                       follow_redirects=True)
