"""What a slot migration's refusals do to a call on a process's cluster client: sent again
until the slot has moved (queues/cluster_migration.py), and other errors raised at once."""

from __future__ import annotations

import pytest
from redis.exceptions import AskError, ClusterError, MovedError, ResponseError, TryAgainError

from queues import cluster_migration
from queues.cluster_migration import refused_during_migration, until_migrated


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
