"""Hot reload of malformed config files (refused, still watched) and of secrets (never
quoted from a YAML error, literal ones warned about by entry, never by value)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.ingress.config_replicas import (
    Replica,
    config_text,
    nats_client,  # noqa: F401 - the ``nc`` fixture
    replica_starter,  # noqa: F401 - the ``replica`` fixture
    until,
    write,
)

MALFORMED = {
    "model_info": "model_list:\n  - model_name: a\n    model_info: 3\n"
                  "    litellm_params: {model: openai/a}\n",
    "model_name": "model_list:\n  - model_name: [a, b]\n    litellm_params: {model: openai/a}\n",
    "model": "model_list:\n  - model_name: a\n    litellm_params: {model: {openai: a}}\n",
}


@pytest.mark.parametrize("broken", list(MALFORMED.values()), ids=list(MALFORMED))
async def test_a_malformed_entry_is_refused_and_the_file_is_still_watched(
    replica: Replica, tmp_path: Path, caplog: pytest.LogCaptureFixture, broken: str
) -> None:
    path = write(tmp_path / "c.yaml", config_text("a"))
    reloader = await replica(path)
    with caplog.at_level(logging.ERROR, logger="aigw.config"):
        write(path, broken)
        await until(lambda: any("refused" in r.getMessage() for r in caplog.records))
    (refused,) = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refused.startswith(f"config reload refused: {path}: model_list[0]")
    result = await reloader.reload()  # SIGHUP and POST /admin/config/reload: a 400, not a 500
    assert not result.applied and result.error is not None
    assert result.error.startswith("model_list[0]")
    write(path, config_text("a", "b"))
    await until(lambda: "b" in reloader.gateway.router)


async def test_a_yaml_error_is_refused_without_quoting_the_secret_on_its_line(
    replica: Replica, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "c.yaml", config_text("a"))
    reloader = await replica(path)
    write(path, config_text("a").replace("os.environ/OPENAI_KEY", '"sk-live-SECRET123'))
    with caplog.at_level(logging.DEBUG, logger="aigw"):
        result = await reloader.reload()
    assert result.error is not None and "not valid YAML at line" in result.error
    assert "SECRET123" not in result.error
    assert not [r for r in caplog.records if "SECRET123" in r.getMessage()]


async def test_publishing_literal_secrets_warns_once_naming_the_entries(
    replica: Replica, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "c.yaml", config_text("a"))
    reloader = await replica(path)  # publishes a literal master_key: warned about
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="aigw.config"):
        write(path, config_text("a", "b").replace("os.environ/OPENAI_KEY", "sk-in-the-file"))
        assert (await reloader.reload()).applied
    (warning,) = [r.getMessage() for r in caplog.records if "literally" in r.getMessage()]
    assert "model_list[0] (a) litellm_params.api_key" in warning
    assert "model_list[1] (b) litellm_params.api_key" in warning
    assert "general_settings.master_key" in warning and "os.environ/NAME" in warning
    assert "sk-in-the-file" not in warning and "sk-master" not in warning
