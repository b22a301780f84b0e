"""Redis Cluster clients from ``redis+cluster://`` URLs.

The URL names a few nodes of the cluster (any of them, primaries or replicas); the client asks
them for the slot map and then follows ``MOVED`` / ``ASK`` by itself, so a resharding or a
failover needs no config change::

    redis+cluster://[[user]:password@]host:port[,host:port...][/]

There is no database number: a cluster has only db 0. The same retry policy as the plain and
Sentinel clients (queues/connect.py) is applied, so a command that meets a primary being
failed over is retried until a replica has taken its slots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

from queues.rq_cluster import RQCluster

CLUSTER_SCHEME = "redis+cluster"
DEFAULT_CLUSTER_PORT = 6379


@dataclass(frozen=True)
class ClusterURL:
    nodes: list[tuple[str, int]]
    username: str | None = None
    password: str | None = None


def is_cluster_url(url: str) -> bool:
    return url.startswith(f"{CLUSTER_SCHEME}://")


def split_netloc(
    url: str, netloc: str, kind: str, default_port: int
) -> tuple[str, str, list[tuple[str, int]]]:
    """(username, password, [(host, port), ...]) of a ``user:pass@h1:p1,h2:p2`` netloc, as
    the cluster and Sentinel URLs write their seed nodes; raises ValueError naming the fault."""
    userinfo, _, hosts = netloc.rpartition("@")
    username, _, password = userinfo.partition(":") if userinfo else ("", "", "")
    nodes = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "")
        if not host:
            raise ValueError(f"{kind} URL {url!r}: empty host in {hosts!r}")
        try:
            nodes.append((host, int(port) if port else default_port))
        except ValueError:
            raise ValueError(f"{kind} URL {url!r}: port {port!r} is not a number") from None
    return username, password, nodes


def parse_cluster_url(url: str) -> ClusterURL:
    """Split a ``redis+cluster://`` URL; raises ValueError naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != CLUSTER_SCHEME:
        raise ValueError(f"not a {CLUSTER_SCHEME}:// URL: {url!r}")
    username, password, nodes = split_netloc(url, parts.netloc, "cluster", DEFAULT_CLUSTER_PORT)
    if parts.path.strip("/"):
        raise ValueError(f"cluster URL {url!r}: a cluster has no database number or path")
    if parts.query:
        raise ValueError(f"cluster URL {url!r}: no options are supported ({parts.query!r})")
    return ClusterURL(nodes, unquote(username) or None, unquote(password) or None)


def cluster_from_url(url: str, retry: Retry, for_rq: bool = False, **settings: Any) -> RedisCluster:
    """A cluster client for `url` with `retry` and the connection settings of the others.

    `for_rq`: an `RQCluster` (queues/rq_cluster.py), for the keys of ONE slot group (RQ's and
    the group's own, as a process uses it); never for calls naming keys of several groups (its
    pipelines are transactions, which breaks redis-py's own split of a multi-key command).

    `health_check_interval` is dropped: cluster connections check health on their own refresh.
    """
    spec = parse_cluster_url(url)
    settings.pop("health_check_interval", None)
    client_class = RQCluster if for_rq else RedisCluster
    return client_class(
        startup_nodes=[ClusterNode(host, port) for host, port in spec.nodes],
        username=spec.username,
        password=spec.password,
        retry=retry,
        **settings,
    )
