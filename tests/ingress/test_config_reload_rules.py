"""Hot reload's pure parts: when a replica publishes its file at start, removing the master
key refused live, and the config document (hash-checked, unresolved, naming literal
secrets)."""

from __future__ import annotations

import yaml

from ingress.config.apply import refusal
from ingress.config.file import ConfigFile
from ingress.config.publish import publish_at_start
from schemas.config import parse_config
from schemas.config_doc import ConfigDocument, content_hash
from tests.ingress.config_replicas import ENV, config_text


def file_of(text: str, mtime: float) -> ConfigFile:
    return ConfigFile(text, content_hash(text), mtime, len(text))


def test_a_replica_publishes_at_start_when_the_kv_holds_no_config() -> None:
    assert publish_at_start(file_of("a", 100.0), None)


def test_a_replica_with_the_same_file_publishes_nothing_at_start() -> None:
    current = ConfigDocument.of("a", "h:/c.yaml", 50.0)
    assert not publish_at_start(file_of("a", 200.0), current)


def test_a_newer_file_wins_at_start_and_an_older_one_follows_the_kv() -> None:
    current = ConfigDocument.of("b", "h:/c.yaml", 100.0)
    assert publish_at_start(file_of("a", 101.0), current)
    assert not publish_at_start(file_of("a", 99.0), current)


def test_removing_the_master_key_cannot_happen_live() -> None:
    closed = parse_config(yaml.safe_load(config_text("m")), ENV)
    opened = parse_config(yaml.safe_load(config_text("m", master=None)), ENV)
    assert refusal(closed, opened) is not None
    assert refusal(opened, closed) is None
    assert refusal(closed, closed) is None


def test_a_document_keeps_the_text_unresolved_and_round_trips() -> None:
    doc = ConfigDocument.of(config_text("m"), "h:/c.yaml", 1.0)
    assert "os.environ/OPENAI_KEY" in doc.text and "sk-test" not in doc.encode().decode()
    again = ConfigDocument.decode(doc.encode())
    assert again == doc
    assert again.parse(ENV).group("m")[0].api_key.get_secret_value() == "sk-test"


def test_a_document_whose_text_does_not_match_its_hash_is_unreadable() -> None:
    doc = ConfigDocument.of("a: 1", "h:/c.yaml", 1.0)
    tampered = doc.model_copy(update={"text": "a: 2"})
    assert ConfigDocument.decode(tampered.encode()) is None
    assert ConfigDocument.decode(b"not json") is None


def test_a_document_names_the_secrets_written_literally_never_their_values() -> None:
    text = yaml.safe_dump({
        "model_list": [
            {"model_name": "env", "litellm_params": {"model": "openai/a",
                                                     "api_key": "os.environ/OPENAI_KEY"}},
            {"model_name": "lit", "litellm_params": {"model": "openai/b", "api_key": "sk-lit"}},
            {"model_name": "none", "litellm_params": {"model": "mock/c"}},
        ],
        "general_settings": {"master_key": "sk-master"},
    })
    found = ConfigDocument.of(text, "h:/c.yaml", 1.0).literal_secrets()
    assert found == ["model_list[1] (lit) litellm_params.api_key", "general_settings.master_key"]
    assert ConfigDocument.of(config_text("a", master="os.environ/MK"), "h:/c.yaml",
                             1.0).literal_secrets() == []
