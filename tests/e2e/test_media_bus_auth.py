"""Images and audio on a NATS server that allows each process only its own role's subjects:
uploads and answers through the object store work, and the server refuses nothing."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from cli.bus_config import EmbeddedCredentials
from cli.nats_server import NatsServer
from tests.e2e.test_bus_auth import MASTER_KEY, RoleGateway
from tests.e2e.test_media import wav
from tests.fakes.openai_media import fake_png
from tests.fakes.openai_server import FakeOpenAIState
from tests.harness import write_config

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def secured(fake_openai: tuple[str, FakeOpenAIState], tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[RoleGateway, Path]]:
    work = tmp_path_factory.mktemp("media-bus-auth")
    credentials = EmbeddedCredentials.load_or_create(work)
    server = NatsServer(work / "nats", extra_config=credentials.authorization())
    server.start()

    def deployment(alias: str, upstream: str) -> dict[str, object]:
        return {"model_name": alias, "litellm_params": {
            "model": f"openai/{upstream}", "api_base": f"{fake_openai[0]}/v1",
            "api_key": "sk-fake"}}

    config = write_config(work / "config.yaml", {
        "model_list": [deployment("dall-e-3", "dall-e-3"), deployment("whisper", "whisper-1"),
                       deployment("tts", "tts-1")],
        "general_settings": {"master_key": MASTER_KEY},
    })
    gw = RoleGateway(nats_url=server.url, config_path=config, log_dir=work,
                     env={"AIGW_ACCOUNTING_BATCH_AGE": "0.2"})
    gw.credentials = credentials
    try:
        gw.start_accounting(work / "data")
        gw.start_worker("openai")
        gw.start_ingress()
        gw.wait_ready(60)
        yield gw, work / "nats" / "nats-server.log"
    finally:
        gw.stop()
        server.stop()


def test_uploads_and_large_answers_pass_the_role_permissions(
        secured: tuple[RoleGateway, Path]) -> None:
    gw, server_log = secured
    client = openai.OpenAI(base_url=gw.base_url + "/v1", api_key=MASTER_KEY, max_retries=0,
                           timeout=60)
    audio = wav(300)  # over max_payload: through the object store
    text = client.audio.transcriptions.create(model="whisper", file=("a.wav", audio))
    assert text.text == f"Fake transcript: heard {len(audio)} bytes."
    images = client.images.generate(model="dall-e-3", prompt="x", size="1024x1792",
                                    response_format="b64_json")  # an answer over 512 KiB
    assert base64.b64decode((images.data or [])[0].b64_json or "") == fake_png("1024x1792")
    with client.audio.speech.with_streaming_response.create(
            model="tts", voice="alloy", input="hello") as response:
        assert len(response.read()) > 0
    violations = [x for x in server_log.read_text().splitlines() if "Violation" in x]
    assert violations == [], gw.all_logs()
