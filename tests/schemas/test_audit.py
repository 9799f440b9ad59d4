"""The audit event's contract: ids, diffs, and that no secret can be stored in one."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from schemas.audit import (
    REDACTED,
    AuditEvent,
    AuditQuery,
    FieldChange,
    audit_event_id,
    diff,
    redact,
)

SECRET = "sk-aigw-very-secret-value-0123456789abcdef"


def event(**fields: object) -> AuditEvent:
    base: dict[str, object] = {"actor": "master", "actor_kind": "master",
                               "action": "key.update", "target_kind": "key",
                               "target_id": "key_1", "request_id": "req_1"}
    return AuditEvent.model_validate({**base, **fields})


def test_the_event_id_is_the_same_for_the_same_action_of_the_same_request() -> None:
    assert event().event_id == event().event_id == audit_event_id(
        "req_1", "key.update", "key", "key_1")
    assert event(request_id="req_2").event_id != event().event_id
    assert event(action="key.revoke").event_id != event().event_id
    assert event().event_id.startswith("aud_")


def test_an_explicit_event_id_is_kept() -> None:
    assert event(event_id="aud_given").event_id == "aud_given"


def test_diff_lists_changed_fields_with_nested_ones_dotted() -> None:
    before = {"alias": "a", "limits": {"rpm": 10, "tpm": None}, "revoked": False}
    after = {"alias": "b", "limits": {"rpm": 20, "tpm": None}, "revoked": False}
    assert diff(before, after) == {
        "alias": FieldChange(before="a", after="b"),
        "limits.rpm": FieldChange(before=10, after=20),
    }


def test_diff_of_a_creation_and_a_deletion_has_one_side_empty() -> None:
    assert diff(None, {"alias": "x"}) == {"alias": FieldChange(before=None, after="x")}
    assert diff({"alias": "x"}, None) == {"alias": FieldChange(before="x", after=None)}


def test_a_changed_secret_is_listed_but_never_shown() -> None:
    changes = diff({"hint": "sk-aigw-...aaaa"},
                   {"hint": "sk-aigw-...cdef", "secret": SECRET})
    assert changes["secret"] == FieldChange(before=None, after=REDACTED)
    assert SECRET not in repr(changes)


def test_a_secret_that_did_not_change_is_left_out() -> None:
    assert diff({"secret_hashes": [{"hash": "h"}]}, {"secret_hashes": [{"hash": "h"}]}) == {}


def test_a_rotated_hash_is_redacted_on_both_sides() -> None:
    changes = diff({"secret_hashes": [{"hash": "old"}]}, {"secret_hashes": [{"hash": "new"}]})
    assert changes == {"secret_hashes": FieldChange(before=REDACTED, after=REDACTED)}


def test_redact_reaches_into_nested_objects_and_lists() -> None:
    value = {"a": {"master_key": "m", "keep": 1}, "list": [{"api_key": "k"}],
             "db_password": "p", "openai_token": "t"}
    assert redact(value) == {"a": {"master_key": REDACTED, "keep": 1},
                             "list": [{"api_key": REDACTED}], "db_password": REDACTED,
                             "openai_token": REDACTED}
    assert value["a"] == {"master_key": "m", "keep": 1}  # not modified


def test_the_event_redacts_a_secret_a_careless_caller_puts_in_changes() -> None:
    made = event(changes={
        "secret": {"before": None, "after": SECRET},
        "metadata": {"before": None, "after": {"token": SECRET}},
        "limits.rpm": FieldChange(before=1, after=2),
    })
    text = made.model_dump_json()
    assert SECRET not in text
    assert made.changes["secret"] == FieldChange(before=None, after=REDACTED)
    assert made.changes["metadata"].after == {"token": REDACTED}
    assert made.changes["limits.rpm"] == FieldChange(before=1, after=2)


def test_the_event_round_trips_through_json() -> None:
    made = event(changes={"alias": {"before": "a", "after": "b"}}, source_ip="10.0.0.1")
    assert AuditEvent.model_validate_json(made.model_dump_json()) == made


def test_unknown_actions_and_fields_are_refused() -> None:
    with pytest.raises(ValidationError):
        event(action="key.explode")
    with pytest.raises(ValidationError):
        event(surprise=1)


def test_the_query_needs_until_after_since_and_a_bounded_page() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ValidationError):
        AuditQuery(since=t, until=t)
    with pytest.raises(ValidationError):
        AuditQuery(limit=0)
    with pytest.raises(ValidationError):
        AuditQuery(limit=1001)
    assert AuditQuery(action="key.create", limit=5).limit == 5
