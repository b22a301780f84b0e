"""Integration tests run on a real Redis (see tests/conftest.py for how it is found)."""

from collections.abc import Iterator

import pytest

from tests.conftest import SEATTLE, require_redis_server
from workers.cli import main
from workers.standin_cluster import LocalRedisCluster


@pytest.fixture
def redis(real_redis):
    return real_redis


@pytest.fixture
def cli(redis_url, keys, monkeypatch):  # type: ignore[no-untyped-def]
    """`cityrelay ...` run in-process against the real Redis, under the test's prefix."""
    monkeypatch.setenv("REDIS_URL", redis_url)

    def run(*args: str) -> int:
        return main(["--prefix", keys.prefix, "--config", str(SEATTLE), *args])

    return run


@pytest.fixture
def cluster() -> Iterator[LocalRedisCluster]:
    """A Redis Cluster of our own: 3 primaries, 3 replicas on free loopback ports, every node
    stopped afterwards (its data is the test's alone, so nothing else is ever flushed)."""
    require_redis_server("the cluster tests start their own 6-node Redis Cluster")
    nodes = LocalRedisCluster().start()
    try:
        yield nodes
    finally:
        nodes.stop()
