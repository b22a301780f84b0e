"""Redis clients from URLs: plain ``redis://`` / ``rediss://`` / ``unix://`` and Sentinel.

Sentinel URLs name the sentinels and the monitored service, so a failover moves the master
without any config change::

    redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db][?sentinel_password=..]

Every client gets explicit timeouts and a retry policy (redis-py `Retry` with exponential
backoff and jitter), so a worker whose Redis restarts or fails over reconnects by itself
instead of crashing; a Sentinel-managed client asks the sentinels for the new master on
reconnect. Producers want the opposite trade-off (fail fast, then spool locally): call with
``retries=0, socket_connect_timeout=0.5`` (`PRODUCER_SETTINGS`).

``redis+cluster://host:port,...`` (queues/cluster.py) gives a Redis Cluster client. A process
on a cluster serves ONE slot group (a hash-tag prefix such as ``{city}``, queues/keys.py): every
key it names is in one slot, so `redis_from_url` gives it an `RQCluster`, whose pipelines are
transactions as on a plain client (RQ and cityrelay's MULTIs rely on that). Tools that read
keys of several groups use `cluster_client_from_url`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

from redis import Redis
from redis.backoff import EqualJitterBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection
from redis.utils import SENTINEL

from queues.cluster import cluster_from_url, is_cluster_url, split_netloc

SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379
# Workers: ride out restarts and failovers. A command is retried 12 times, waiting half of
# min(2 s, 0.05 s * 2^n) plus up to as much again at random: between 8.5 and 17 s in all, enough
# for a Sentinel failover with down-after-milliseconds 5000 (see docs/operations.md).
WORKER_SETTINGS: dict[str, Any] = {"retries": 12, "backoff_base": 0.05, "backoff_cap": 2.0}
# One-shot commands (`cityrelay status`, `publish`, ...): a few quick retries, then a prompt
# error for the operator (well under a second) instead of waiting out a failover.
COMMAND_SETTINGS: dict[str, Any] = {"retries": 3, "backoff_base": 0.05, "backoff_cap": 0.5}
# Producers: answer within ~0.5 s when Redis is gone, so the event can be spooled instead.
PRODUCER_SETTINGS: dict[str, Any] = {"retries": 0, "socket_connect_timeout": 0.5}


class FailoverConnection(SentinelManagedConnection):
    """redis-py's Sentinel-managed connection with two fixes (both seen with redis-py 8.1 in
    tests/integration/test_sentinel_failover.py).

    - It asks the sentinels for the master on EVERY reconnect. The stock class looks the master
      up only in `connect()`, which the pool calls when it hands a connection out; a command
      retried on the same connection after the master died reconnects through
      `connect_check_health()` to the old address - the dead master - until its retries run
      out. Here that path re-resolves too, and leaves retrying to the command's retry policy
      so each attempt asks the sentinels again.
    - A read interrupted by an exception closes the connection, as for plain connections. The
      stock class defaults `disconnect_on_error` to False, so an RQ worker stopped by SIGTERM
      while blocked in BLPOP put the connection back in the pool with the BLPOP reply still
      pending, and its next command (RQ's register_death) waited for that reply for minutes.
    """

    def read_response(
        self,
        disable_decoding: bool = False,
        *,
        timeout: float | object = SENTINEL,
        disconnect_on_error: bool | None = True,
        push_request: bool | None = False,
    ) -> Any:
        return super().read_response(
            disable_decoding,
            timeout=timeout,
            disconnect_on_error=disconnect_on_error,
            push_request=push_request,
        )

    def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        if self._sock:
            return
        if self.connection_pool.is_master:
            self.host, self.port = self.connection_pool.get_master_address()
            retry_socket_connect = False
        super().connect_check_health(check_health, retry_socket_connect)


@dataclass(frozen=True)
class SentinelURL:
    sentinels: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None


def parse_sentinel_url(url: str) -> SentinelURL:
    """Split a ``redis+sentinel://`` URL; raises ValueError naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise ValueError(f"not a {SENTINEL_SCHEME}:// URL: {url!r}")
    username, password, sentinels = split_netloc(
        url, parts.netloc, "sentinel", DEFAULT_SENTINEL_PORT
    )
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ValueError(f"sentinel URL {url!r}: the path must be /service_name[/db]")
    try:
        db = int(path[1]) if len(path) == 2 else 0
    except ValueError:
        raise ValueError(f"sentinel URL {url!r}: db {path[1]!r} is not a number") from None
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    sentinel_password = query.pop("sentinel_password", None)
    if query:
        raise ValueError(f"sentinel URL {url!r}: unknown option(s) {', '.join(sorted(query))}")
    return SentinelURL(
        sentinels=sentinels,
        service=unquote(path[0]),
        db=db,
        username=unquote(username) or None,
        password=unquote(password) or None,
        sentinel_password=sentinel_password,
    )


def retry_policy(retries: int, backoff_base: float, backoff_cap: float) -> Retry:
    """Retry connection errors and timeouts with exponential backoff and equal jitter.

    Equal jitter (half fixed, half random) keeps a known minimum total wait, so a retry budget
    reliably spans a failover, while clients that lost Redis together do not retry in step.
    """
    return Retry(EqualJitterBackoff(cap=backoff_cap, base=backoff_base), retries)


def redis_from_url(
    url: str,
    *,
    retries: int = WORKER_SETTINGS["retries"],
    backoff_base: float = WORKER_SETTINGS["backoff_base"],
    backoff_cap: float = WORKER_SETTINGS["backoff_cap"],
    socket_timeout: float = 5.0,
    socket_connect_timeout: float = 2.0,
    health_check_interval: int = 30,
    **kwargs: Any,
) -> Redis:
    """A Redis client for `url` (plain, Sentinel or cluster) with timeouts and
    reconnect-with-backoff.

    For a cluster URL it is an `RQCluster` for one slot group (see the module doc): typed as
    `Redis` because on keys of one slot it answers every command cityrelay sends a `Redis`.
    Extra keyword arguments go to the client (e.g. ``decode_responses=True``).
    """
    settings: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_connect_timeout,
        "socket_keepalive": True,
        "health_check_interval": health_check_interval,
        "retry": retry_policy(retries, backoff_base, backoff_cap),
        **kwargs,
    }
    if is_cluster_url(url):
        retry = settings.pop("retry")
        return cast(Redis, cluster_from_url(url, retry, True, **settings))
    if not url.startswith(f"{SENTINEL_SCHEME}://"):
        return Redis.from_url(url, **settings)
    spec = parse_sentinel_url(url)
    sentinel_kwargs = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_connect_timeout,
    }
    if spec.sentinel_password:
        sentinel_kwargs["password"] = spec.sentinel_password  # type: ignore[assignment]
    sentinel = Sentinel(spec.sentinels, sentinel_kwargs=sentinel_kwargs)
    return sentinel.master_for(
        spec.service,
        connection_class=FailoverConnection,
        db=spec.db,
        username=spec.username,
        password=spec.password,
        **settings,
    )


def cluster_client_from_url(
    url: str,
    *,
    retries: int = WORKER_SETTINGS["retries"],
    backoff_base: float = WORKER_SETTINGS["backoff_base"],
    backoff_cap: float = WORKER_SETTINGS["backoff_cap"],
    socket_timeout: float = 5.0,
    socket_connect_timeout: float = 2.0,
    for_rq: bool = False,
    **kwargs: Any,
) -> RedisCluster:
    """A Redis Cluster client for a ``redis+cluster://`` URL (queues/cluster.py), with the same
    timeouts and retry policy as `redis_from_url`: a command that meets a failover is retried
    while a replica takes over the dead primary's slots. `for_rq`: a client for RQ's keys only
    (queues/rq_cluster.py)."""
    return cluster_from_url(
        url,
        retry_policy(retries, backoff_base, backoff_cap),
        for_rq,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_connect_timeout,
        socket_keepalive=True,
        **kwargs,
    )
