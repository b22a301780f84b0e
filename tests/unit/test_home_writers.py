"""`home_writers`: where a producer process of a partitioned city (the MQTT bridge) writes each
department's events, so that its home's ingest reads them."""

from __future__ import annotations

import fakeredis
import pytest

from city.config import load_city
from queues.keys import Keys
from queues.partition import SHARD_ENV, PartitionError, home_writers
from tests.conftest import write_city


def test_url_shards_get_their_own_redis_and_the_local_shard_this_processs(tmp_path) -> None:
    partitions = {
        "default": "a",
        "shards": {
            "a": {"url": "redis://shard-a:6379/0"},
            "b": {"url": "redis://shard-b:6379/0", "departments": ["fire"]},
        },
    }
    config, _ = load_city(write_city(tmp_path, partitions=partitions))
    keys, own, other = Keys("sea"), fakeredis.FakeRedis(), fakeredis.FakeRedis()
    opened: list[str] = []

    def connect(url: str) -> fakeredis.FakeRedis:
        opened.append(url)
        return other

    homes = home_writers(config, keys, own, connect, {SHARD_ENV: "a"})
    assert opened == ["redis://shard-b:6379/0"]  # one client per other shard
    assert homes["fire"] == (other, keys) and homes["sdot"] == (own, keys)
    with pytest.raises(PartitionError, match=SHARD_ENV):
        home_writers(config, keys, own, connect, {})  # which shard is this process's?


def test_slot_groups_share_the_client_under_each_home_groups_prefix(tmp_path) -> None:
    partitions = {
        "default": "a",
        "shards": {"a": {"prefix": "{sea-a}"}, "b": {"prefix": "{sea-b}", "departments": ["fire"]}},
    }
    config, _ = load_city(write_city(tmp_path, partitions=partitions))
    redis = fakeredis.FakeRedis()
    homes = home_writers(config, Keys("{sea-b}"), redis, lambda url: pytest.fail(url), {})
    assert homes["fire"] == (redis, Keys("{sea-b}")) and homes["sdot"] == (redis, Keys("{sea-a}"))
    with pytest.raises(PartitionError, match="no slot group"):
        home_writers(config, Keys("{elsewhere}"), redis, lambda url: pytest.fail(url), {})
