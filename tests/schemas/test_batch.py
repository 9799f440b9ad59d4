"""Batch wire shapes and ids."""

from __future__ import annotations

from schemas.batch import (
    STOPPED,
    Batch,
    BatchStatus,
    item_msg_id,
    item_request_id,
    output_line,
    progress,
    result_key,
)


def test_ids_are_deterministic() -> None:
    assert item_request_id("batch_1", "req-1") == "batch_1-req-1"
    assert item_request_id("batch_1", "a.b") == item_request_id("batch_1", "a.b")
    assert item_request_id("batch_1", "a.b") != item_request_id("batch_2", "a.b")
    assert item_msg_id("batch_1", 7) == "batch:batch_1:7"


def test_no_two_custom_ids_share_a_request_id() -> None:
    """A hashed custom_id must not equal another, raw custom_id: the two items' usage
    events would share an id and one call would be dropped from accounting."""
    hashed = item_request_id("batch_1", "a.b")
    tail = hashed.removeprefix("batch_1-")
    assert item_request_id("batch_1", tail) != hashed
    assert item_request_id("batch_1", "a/b") != hashed
    assert len(hashed) <= 64 + len("batch_1-")
    assert not {".", "*", ">", ":", " "} & set(hashed)  # a subject token, a header value


def test_workers_run_the_items_of_an_in_progress_batch_only() -> None:
    # validating items wait for the ingress; everything else is done with its items
    assert set(BatchStatus) - STOPPED == {BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS}


def test_progress_is_read_from_result_keys_and_a_success_wins() -> None:
    keys = [f"$KV.aigw_batch_results.{result_key('batch_1', ok, line)}"
            for ok, line in ((True, 1), (False, 2), (False, 3), (True, 3))]
    assert progress(keys) == ({1, 3}, {2})


def test_output_line_has_openai_shape() -> None:
    line = output_line("batch_1", "c", "batch_1-c", 200, {"x": 1})
    assert line["id"].startswith("batch_req_") and line["error"] is None
    assert line["response"] == {"status_code": 200, "request_id": "batch_1-c", "body": {"x": 1}}


def test_batch_object_serializes_like_openai() -> None:
    batch = Batch(id="batch_1", endpoint="/v1/chat/completions", input_file_id="file-1",
                  status=BatchStatus.IN_PROGRESS, created_at=1)
    body = batch.model_dump(mode="json")
    assert body["object"] == "batch" and body["status"] == "in_progress"
    assert body["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
