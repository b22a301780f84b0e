"""The state one gateway process shares between requests: clients, catalog, stores, pools."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import redis.asyncio as aioredis
from redis import Redis

from city.catalog import EventCatalog
from city.config import CityConfig
from queues.cluster import is_cluster_url, parse_cluster_url
from queues.connect import COMMAND_SETTINGS, SENTINEL_SCHEME, parse_sentinel_url, redis_from_url
from queues.keys import Keys
from workers.gateway.auth import Authenticator
from workers.gateway.counters import GatewayCounters
from workers.gateway.homes import Homes
from workers.gateway.idempotency import IdempotencyStore
from workers.gateway.inbox import STREAM_BLOCK_MS, InboxReader
from workers.gateway.locate import Locator
from workers.gateway.publish import Publisher
from workers.gateway.settings import GatewaySettings
from workers.runtime import Runtime


@dataclass
class Gateway:
    """Everything the handlers share (``request.app.state.gateway``)."""

    settings: GatewaySettings
    keys: Keys
    config: CityConfig
    catalog: EventCatalog
    redis: Redis  # synchronous: Producer, dead letters, acknowledgements (worker threads)
    aredis: Any  # redis.asyncio: tokens, idempotency, inbox reads, readiness
    auth: Authenticator
    counters: GatewayCounters
    idempotency: IdempotencyStore
    publisher: Publisher
    homes: Homes  # where each department is served (partitioned cities)
    reader: InboxReader
    locator: Locator
    publish_limiter: anyio.CapacityLimiter
    emergency_limiter: anyio.CapacityLimiter
    streams_open: int = 0
    background: list[asyncio.Task[None]] = field(default_factory=list)


def async_redis(url: str, max_connections: int) -> Any:
    settings: dict[str, Any] = {
        "socket_timeout": STREAM_BLOCK_MS / 1000 + 5,
        "socket_connect_timeout": 2.0,
        "max_connections": max_connections,
    }
    if is_cluster_url(url):  # the slot groups of one Redis Cluster (queues/cluster.py)
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        seeds = parse_cluster_url(url)
        nodes = [ClusterNode(host, port) for host, port in seeds.nodes]
        return RedisCluster(
            startup_nodes=nodes, username=seeds.username, password=seeds.password, **settings
        )
    if not url.startswith(f"{SENTINEL_SCHEME}://"):
        return aioredis.Redis.from_url(url, **settings)
    from redis.asyncio.sentinel import Sentinel

    spec = parse_sentinel_url(url)
    sentinel_kwargs: dict[str, Any] = {"socket_timeout": 2.0}
    if spec.sentinel_password:
        sentinel_kwargs["password"] = spec.sentinel_password
    return Sentinel(spec.sentinels, sentinel_kwargs=sentinel_kwargs).master_for(
        spec.service, db=spec.db, username=spec.username, password=spec.password, **settings
    )


def build_state(runtime: Runtime, settings: GatewaySettings) -> Gateway:
    config, config_path = runtime.city()
    base_dir = Path(config_path).parent if Path(config_path).is_file() else Path(config_path)
    keys = runtime.keys
    threads = settings.publish_threads + settings.emergency_threads
    sync = redis_from_url(runtime.redis_url, **COMMAND_SETTINGS, max_connections=threads + 16)
    aredis = async_redis(runtime.redis_url, settings.max_streams + 64)
    catalog = EventCatalog(config)
    homes = Homes.for_city(config, keys)
    return Gateway(
        homes=homes,
        settings=settings,
        keys=keys,
        config=config,
        catalog=catalog,
        redis=sync,
        aredis=aredis,
        auth=Authenticator(aredis, keys, settings.token_cache_s),
        counters=GatewayCounters(keys),
        idempotency=IdempotencyStore(aredis, keys, settings.idempotency_ttl_s),
        publisher=Publisher(sync, keys, catalog, settings.replica_timeout_ms, homes),
        reader=InboxReader(aredis, keys, homes),
        locator=Locator(sync, keys, config, base_dir),
        publish_limiter=anyio.CapacityLimiter(settings.publish_threads),
        emergency_limiter=anyio.CapacityLimiter(settings.emergency_threads),
    )
