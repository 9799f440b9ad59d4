"""The worker's gate: attempts beyond its concurrency are refused, and batch items keep
out of the way while interactive attempts are being refused."""

from __future__ import annotations

from workers.capacity import REFUSAL_MEMORY, SPARE_SLOTS, Capacity


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_admits_up_to_the_concurrency_then_refuses() -> None:
    gate = Capacity(3, Clock())
    assert [gate.admit(n) for n in range(5)] == [True, True, True, False, False]
    assert gate.refused == 2
    assert gate.handler_slots == 3 + SPARE_SLOTS


def test_batch_waits_while_interactive_attempts_are_refused() -> None:
    clock = Clock()
    gate = Capacity(1, clock)
    assert not gate.interactive_waiting()
    assert gate.admit(0)
    assert not gate.interactive_waiting()  # admitted calls do not hold batch back
    assert not gate.admit(1)
    assert gate.interactive_waiting()
    clock.now += REFUSAL_MEMORY - 0.01
    assert gate.interactive_waiting()
    clock.now += 0.02
    assert not gate.interactive_waiting()


class _Service:
    in_flight = 0


def test_batch_runner_takes_no_room_while_interactive_calls_are_refused() -> None:
    from typing import cast

    from workers.batch.runner import BatchRunner
    from workers.service import WorkerService

    clock = Clock()
    gate = Capacity(4, clock)
    runner = BatchRunner("openai", cast(WorkerService, _Service()), 4, gate)
    assert runner._room() > 0
    assert not gate.admit(4)  # an interactive attempt turned away as busy
    assert runner._room() == 0
    clock.now += REFUSAL_MEMORY + 0.01
    assert runner._room() > 0
