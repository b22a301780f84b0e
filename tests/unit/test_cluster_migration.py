"""What a slot migration's refusals do to a call on a process's cluster client: sent again
until the slot has moved (queues/cluster_migration.py), and other errors raised at once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from redis.exceptions import (
    AskError,
    ClusterError,
    MovedError,
    ResponseError,
    TryAgainError,
    WatchError,
)

from queues import cluster_migration
from queues.cluster_migration import refused_during_migration, run_transaction, until_migrated


@pytest.mark.parametrize(
    "error",
    [
        TryAgainError("Multiple keys request during rehashing of slot"),
        AskError("3999 127.0.0.1:6381"),
        MovedError("3999 127.0.0.1:6381"),
        ClusterError("TTL exhausted."),
        ResponseError("UNBLOCKED the stream key no longer exists"),
    ],
)
def test_a_migration_refusal_is_sent_again_until_it_runs(error: Exception, monkeypatch) -> None:
    monkeypatch.setattr(cluster_migration.time, "sleep", lambda s: None)
    answers: list[object] = [error, error, "ran"]

    def call() -> object:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert refused_during_migration(error)
    assert until_migrated(call) == "ran"
    assert not answers


@pytest.mark.parametrize(
    "error",
    [ResponseError("WRONGTYPE Operation"), ClusterError("Redis Cluster cannot be connected")],
)
def test_any_other_error_is_raised_at_once(error: Exception) -> None:
    calls = []

    def call() -> None:
        calls.append(1)
        raise error

    with pytest.raises(type(error)):
        until_migrated(call)
    assert calls == [1]


def test_a_migration_that_outlasts_the_wait_raises_its_refusal(monkeypatch) -> None:
    clock = iter(range(0, 1000, 5))
    monkeypatch.setattr(cluster_migration.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(cluster_migration.time, "sleep", lambda s: None)

    def call() -> None:
        raise TryAgainError("Multiple keys request during rehashing of slot")

    with pytest.raises(TryAgainError):
        until_migrated(call, wait_s=30)


class WatchedPipeline:
    """What `run_transaction` reads of a cluster pipeline that WATCHed its keys."""

    def __init__(self) -> None:
        self._execution_strategy = SimpleNamespace(_watching=True)


class Clock:
    """A monotonic clock that a refused round trip moves by one second."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def rq_style_loop(execute: Callable[[], list[Any]], attempts: int = 1000) -> list[Any]:
    """RQ's ``while True: try: ... pipe.execute() ... except WatchError: continue``, cut off
    after `attempts` so that a loop that would spin forever fails the test instead."""
    for _ in range(attempts):
        try:
            return run_transaction(WatchedPipeline(), execute)
        except WatchError:
            continue
    raise AssertionError(f"still refused and retried after {attempts} attempts")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(cluster_migration.time, "monotonic", clock)
    monkeypatch.setattr(cluster_migration.time, "sleep", lambda s: None)
    monkeypatch.setattr(cluster_migration, "_watched_refusals", threading.local(), raising=False)
    return clock


@pytest.mark.parametrize(
    "refusal",
    [
        TryAgainError("Multiple keys request during rehashing of slot"),
        WatchError("Slot rebalancing occurred while watching keys"),  # redis-py's, from an ASK
    ],
)
def test_a_watched_transaction_stuck_on_a_migrating_slot_ends_with_its_refusal(
    refusal: Exception, clock: Clock
) -> None:
    if isinstance(refusal, WatchError):
        refusal.__cause__ = AskError("3999 127.0.0.1:6381")

    def execute() -> list[Any]:
        clock.now += 1.0
        raise refusal

    with pytest.raises((TryAgainError, AskError)):
        rq_style_loop(execute)
    assert cluster_migration.MIGRATION_WAIT_S <= clock.now <= cluster_migration.MIGRATION_WAIT_S + 5


def test_the_wait_of_a_watched_transaction_starts_again_once_one_has_run(clock: Clock) -> None:
    refused_until = [20.0, 45.0]  # two migrations, each shorter than MIGRATION_WAIT_S

    def execute() -> list[Any]:
        if clock.now < refused_until[0]:
            clock.now += 1.0
            raise TryAgainError("Multiple keys request during rehashing of slot")
        refused_until.pop(0)
        return ["ran"]

    assert rq_style_loop(execute) == ["ran"]
    assert rq_style_loop(execute) == ["ran"]  # 45 s after the first refusal: not given up
