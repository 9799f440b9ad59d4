"""The gateway the media tests share, and what they read back from it: OpenAI image and
audio deployments (the homestack ``dalle3`` entry among them, some priced by the
deployment), an Anthropic and a Gemini one without the endpoints, on a nats-server of its
own at the default max_payload; a key for each test, silent WAVs, and each call's usage
row and cost. The fixtures are ``media_gateway`` (module-scoped: a test module that imports
``start_media_gateway`` gets a gateway of its own) and ``keyed``."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from cli.nats_server import NatsServer
from tests.e2e.conftest import MASTER_KEY, make_key
from tests.e2e.usage_logs import usage_logs
from tests.fakes.openai_server import FakeOpenAIState
from tests.harness import Gateway, write_config
from tests.redis_server import RedisServer

HOMESTACK = Path(__file__).resolve().parents[2].parent / "shared/examples/homestack-config.yml"
MASTER = {"authorization": f"Bearer {MASTER_KEY}"}
MEDIA_CAP = 12 * 1024 * 1024


def wav(seconds: float, rate: int = 16_000) -> bytes:
    """A silent 16-bit mono WAV of ``seconds``."""
    data = b"\0\0" * int(seconds * rate)
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt "
            + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data)


def _dalle3_entry(openai_url: str) -> dict[str, Any]:
    """The user's own ``dalle3`` entry, pointed at the fake OpenAI server."""
    config = yaml.safe_load(HOMESTACK.read_text())
    [entry] = [e for e in config["model_list"] if e["model_name"] == "dalle3"]
    entry["litellm_params"]["api_base"] = f"{openai_url}/v1"
    return dict(entry)


@pytest.fixture(scope="module", name="media_gateway")
def start_media_gateway(
    fake_openai: tuple[str, FakeOpenAIState], fake_anthropic: tuple[str, object],
    fake_gemini: tuple[str, object], redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    openai_url = fake_openai[0]
    work = tmp_path_factory.mktemp("media")
    # A NATS of its own, at the default max_payload: its accounting answers the usage API.
    nats = NatsServer(work / "nats")
    nats.start()
    assert nats.max_payload == 8 * 1024 * 1024

    def deployment(alias: str, upstream: str, **params: str) -> dict[str, Any]:
        return {"model_name": alias, "litellm_params": {
            "model": f"openai/{upstream}", "api_base": f"{openai_url}/v1",
            "api_key": "os.environ/OPENAI_API_KEY", **params}}

    config = write_config(work / "config.yaml", {
        "model_list": [
            _dalle3_entry(openai_url),
            deployment("dall-e-2", "dall-e-2"),
            deployment("gpt-image-1", "gpt-image-1"),
            deployment("whisper", "whisper-1"),
            deployment("tts", "tts-1"),
            deployment("my-images", "my-image-model", output_cost_per_image="0.05"),
            deployment("my-whisper", "my-stt", input_cost_per_second="0.001"),
            deployment("my-tts", "my-tts", input_cost_per_character="0.0001"),
            deployment("refusing-images", "fail-400"),
            deployment("cut-tts", "cut-speech", input_cost_per_character="0.001"),
            deployment("slow-images", "slow-image", output_cost_per_image="0.07"),
            # a group: one deployment always fails, the other answers
            deployment("images-group", "fail-500"),
            deployment("images-group", "dall-e-2"),
            {"model_name": "claude", "litellm_params": {
                "model": "anthropic/claude-sonnet-4-20250514",
                "api_base": fake_anthropic[0], "api_key": "sk-ant-e2e"}},
            {"model_name": "gemini", "litellm_params": {
                "model": "gemini/gemini-2.0-flash", "api_base": fake_gemini[0],
                "api_key": "gemini-e2e"}},
        ],
        "general_settings": {"master_key": MASTER_KEY},
    })
    gw = Gateway(nats_url=nats.url, config_path=config, log_dir=work,
                 env={"OPENAI_API_KEY": "sk-fake", "REDIS_URL": redis_server.url,
                      "AIGW_ACCOUNTING_BATCH_AGE": "0.2", "AIGW_HEARTBEAT": "0.5",
                      "AIGW_HEARTBEAT_TIMEOUT": "2",
                      "AIGW_MAX_MEDIA_BYTES": str(MEDIA_CAP)})
    try:
        gw.start_accounting(work / "data")
        gw.start_worker("openai")
        gw.start_worker("anthropic")
        gw.start_worker("gemini")
        gw.start_ingress()
        gw.wait_ready(60)  # a loaded machine starts five processes slowly
        yield gw
    finally:
        gw.stop()
        nats.stop()


@pytest.fixture(name="keyed")
def media_key(media_gateway: Gateway) -> tuple[str, openai.OpenAI]:
    key_id, secret = make_key(media_gateway, alias="media-e2e")
    return key_id, openai.OpenAI(base_url=media_gateway.base_url + "/v1", api_key=secret,
                                 max_retries=0, timeout=60)


def _cost(gateway: Gateway, key_id: str, **used: object) -> Decimal:
    """The cost of the key's one call, checking what it used (``images=3``, ...)."""
    [row] = usage_logs(gateway, key_id, expected=1)
    assert row["status"] == "ok", row
    for name, value in used.items():
        assert row[name] == value, (name, row)
    return Decimal(row["cost"])
