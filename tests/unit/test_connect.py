"""Redis URLs: plain and Sentinel, with timeouts and a reconnect policy on every client."""

from __future__ import annotations

import pytest
from redis.backoff import EqualJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.sentinel import SentinelConnectionPool

from queues.connect import (
    PRODUCER_SETTINGS,
    WORKER_SETTINGS,
    FailoverConnection,
    parse_sentinel_url,
    redis_from_url,
)
from workers.runtime import Runtime
from workers.standins import free_port


def test_sentinel_url_with_several_sentinels_db_and_passwords() -> None:
    spec = parse_sentinel_url(
        "redis+sentinel://app:s%40cret@10.0.0.1:26379,10.0.0.2,sentinel-3:26380/city-main/2"
        "?sentinel_password=sp"
    )
    assert spec.sentinels == [("10.0.0.1", 26379), ("10.0.0.2", 26379), ("sentinel-3", 26380)]
    assert (spec.service, spec.db) == ("city-main", 2)
    assert (spec.username, spec.password, spec.sentinel_password) == ("app", "s@cret", "sp")


def test_sentinel_url_defaults() -> None:
    spec = parse_sentinel_url("redis+sentinel://localhost/mymaster")
    assert spec.sentinels == [("localhost", 26379)]
    assert (spec.db, spec.username, spec.password, spec.sentinel_password) == (0, None, None, None)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://localhost/0", "not a redis\\+sentinel"),
        ("redis+sentinel://host:port/mymaster", "not a number"),
        ("redis+sentinel://a:1,/mymaster", "empty host"),
        ("redis+sentinel://a:1", "service_name"),
        ("redis+sentinel://a:1/m/0/extra", "service_name"),
        ("redis+sentinel://a:1/m/zero", "db 'zero'"),
        ("redis+sentinel://a:1/m?socket_timeout=3", "unknown option"),
    ],
)
def test_bad_sentinel_urls_are_refused_clearly(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_sentinel_url(url)


def test_plain_url_client_has_timeouts_and_backoff() -> None:
    client = redis_from_url("redis://127.0.0.1:6379/3", retries=4, decode_responses=True)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["db"] == 3 and kwargs["decode_responses"] is True
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (5.0, 2.0)
    retry = kwargs["retry"]
    assert retry.get_retries() == 4
    assert isinstance(retry._backoff, EqualJitterBackoff)


def test_producer_settings_fail_fast() -> None:
    client = redis_from_url("redis://127.0.0.1:6379/0", **PRODUCER_SETTINGS)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["retry"].get_retries() == 0 and kwargs["socket_connect_timeout"] == 0.5


def test_sentinel_url_gives_a_sentinel_managed_client() -> None:
    client = redis_from_url("redis+sentinel://:pw@127.0.0.1:1/mymaster/4?sentinel_password=sp")
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "mymaster"
    assert pool.connection_kwargs["db"] == 4 and pool.connection_kwargs["password"] == "pw"
    sentinel = pool.sentinel_manager.sentinels[0]
    assert sentinel.connection_pool.connection_kwargs["password"] == "sp"


def test_sentinel_connections_find_the_master_again_on_every_reconnect() -> None:
    client = redis_from_url("redis+sentinel://127.0.0.1:1/mymaster/0")
    pool = client.connection_pool
    assert pool.connection_class is FailoverConnection
    connection = pool.make_connection()
    asked = []
    pool.proxy.get_master_address = lambda: asked.append(1) or ("127.0.0.1", free_port())  # type: ignore[method-assign]
    connection.host, connection.port = "127.0.0.1", 1  # where the old master was
    with pytest.raises(RedisConnectionError):
        connection.connect_check_health()  # the path a retried command takes
    assert asked and connection.port != 1


def test_commands_fail_promptly_while_processes_ride_out_a_failover() -> None:
    runtime = Runtime.from_env(redis_url="redis+sentinel://127.0.0.1:1/mymaster/0")
    command = runtime.redis().connection_pool.connection_kwargs["retry"]
    process = runtime.redis(**WORKER_SETTINGS).connection_pool.connection_kwargs["retry"]
    assert (command.get_retries(), process.get_retries()) == (3, 12)
