"""`write_then_wait` on a cluster during a slot migration: the writes and WAIT are sent again
on the slot's primary until the migration lets them run, not given up after a few
milliseconds (queues/replicas.py)."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from redis.cluster import RedisCluster
from redis.exceptions import AskError, MovedError, TryAgainError

from queues import cluster_migration
from queues.replicas import write_then_wait


class FakeNode:
    """A node client whose pipelines answer, one round trip each, from `answers`."""

    def __init__(self, name: str, answers: list[Any]):
        self.name, self.answers, self.round_trips = name, answers, 0

    def pipeline(self, transaction: bool) -> mock.MagicMock:
        pipe = mock.MagicMock()

        def execute() -> list[Any]:
            self.round_trips += 1
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return list(answer)

        pipe.execute.side_effect = execute
        return pipe


def fake_cluster(*nodes: FakeNode) -> mock.MagicMock:
    """A `RedisCluster` whose slot map names `nodes[0]`, then the next one after each
    `nodes_manager.initialize()`."""
    cluster = mock.MagicMock(spec=RedisCluster)
    cluster.nodes_manager, cluster.retry = mock.MagicMock(), mock.MagicMock()
    serving = [0]

    def initialize() -> None:
        serving[0] = min(serving[0] + 1, len(nodes) - 1)

    cluster.nodes_manager.initialize.side_effect = initialize
    cluster.get_node_from_key.side_effect = lambda key: nodes[serving[0]]
    cluster.get_redis_connection.side_effect = lambda node: node
    cluster.retry.get_retries.return_value = 3
    return cluster


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(cluster_migration.time, "sleep", slept.append)
    return slept


def test_ask_and_tryagain_are_waited_out_on_the_source_until_it_runs(pauses: list[float]) -> None:
    source = FakeNode(
        "source",
        [AskError("3999 127.0.0.1:7001")] * 8
        + [TryAgainError("Multiple keys request during rehashing of slot")] * 3
        + [[b"1-0", 1]],
    )
    cluster = fake_cluster(source)
    assert write_then_wait(cluster, "{g}:k", lambda pipe: None, 1, 100) == [b"1-0", 1]
    assert source.round_trips == 12
    assert len(pauses) == 11 and all(p > 0 for p in pauses)
    cluster.nodes_manager.initialize.assert_not_called()  # the slot map still names the source


def test_moved_reads_the_slot_map_again_and_goes_to_the_new_owner(pauses: list[float]) -> None:
    source = FakeNode(
        "source", [AskError("3999 127.0.0.1:7001"), MovedError("3999 127.0.0.1:7001")]
    )
    target = FakeNode("target", [[b"1-0", 1]])
    cluster = fake_cluster(source, target)
    assert write_then_wait(cluster, "{g}:k", lambda pipe: None, 1, 100) == [b"1-0", 1]
    assert (source.round_trips, target.round_trips) == (2, 1)
    cluster.nodes_manager.initialize.assert_called_once()


def test_a_migration_that_outlasts_the_wait_raises_its_refusal(
    pauses: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = iter(range(0, 10_000, 5))
    monkeypatch.setattr(cluster_migration.time, "monotonic", lambda: float(next(clock)))
    source = FakeNode("source", [AskError("3999 127.0.0.1:7001")] * 100)
    with pytest.raises(AskError):
        write_then_wait(fake_cluster(source), "{g}:k", lambda pipe: None, 1, 100)
    assert 1 < source.round_trips < 100
