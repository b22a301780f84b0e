"""RQ 3.0 on Redis Cluster, for one slot group: what redis-py's cluster client lacks that RQ uses.

With ``RQ_KEY_PREFIX={name}:rq`` (read by RQ at import) every RQ key of a group is in the
group's slot, so RQ's MULTI/EXEC, WATCH and Lua calls are legal on a cluster. Three gaps
remain between `redis.cluster.RedisCluster` and the `redis.Redis` RQ was written for (found
by running RQ's SimpleWorker on tests/integration/test_cluster_rq.py's cluster):

- RQ calls ``connection.pipeline()`` and then ``WATCH`` on it; a plain client's pipeline is
  transactional by default, a cluster client's is not and refuses WATCH. `RQCluster.pipeline`
  defaults to a transaction, as `redis.Redis` does. So an `RQCluster` is for the keys of one
  slot group only (RQ's and the group's own: a process's client, queues/connect.py): redis-py
  splits a multi-key command (EXISTS, DEL, MGET of keys in several slots) through
  ``self.pipeline()``, which as a transaction would refuse keys of several slots.
- RQ reads ``pipeline.watching`` and ``pipeline.explicit_transaction``, attributes of the plain
  pipeline that the cluster pipeline keeps only on its execution strategy.
- A script queued on a cluster pipeline is sent as EVALSHA with no recovery: redis-py leaves
  NOSCRIPT to the caller, and a node's script cache starts empty (a new cluster, a restarted
  node, a promoted replica). The scripts registered on an `RQCluster` note themselves on the
  pipeline they are queued on, and the pipeline makes sure every primary has them first
  (SCRIPT EXISTS, then SCRIPT LOAD of the missing), as `redis.client.Pipeline` does: found
  when ingest's first dedupe claim on a fresh cluster failed with NOSCRIPT. A transaction does
  it again on the node of each attempt, just before its MULTI: redis-py retries a transaction
  that met a failover (connection error, MOVED) on the promoted replica, whose cache is empty,
  and an EVALSHA refused inside EXEC does not undo the transaction's other commands, so the
  NOSCRIPT cannot be retried away. Found when the RQ scheduler child of a worker died with
  NOSCRIPT in its heartbeat right after a primary's SIGKILL
  (tests/integration/test_cluster_failover.py).
- A slot migration (a resharding) refuses commands with ASK / TRYAGAIN / UNBLOCKED, which
  redis-py raises after a short while: `RidesOutMigrations` and `run_transaction`
  (queues/cluster_migration.py) send them again until the slot has moved.
- RQ's Worker reads ``connection.connection_pool`` to raise the socket timeout above its
  blocking pop; a cluster client has a pool per node. The worker must skip that step (set the
  client's `socket_timeout` above RQ's `connection_timeout` instead).
"""

from __future__ import annotations

from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.cluster import ClusterPipeline, RedisCluster, TransactionStrategy
from redis.commands.core import Script

from queues.cluster_migration import RidesOutMigrations, run_transaction, until_migrated


class ClusterScript(Script):
    """A script that, queued on an `RQClusterPipeline`, is loaded before the pipeline runs."""

    def __call__(self, keys: Any = None, args: Any = None, client: Any = None) -> Any:
        target = client if client is not None else self.registered_client
        if isinstance(target, RQClusterPipeline):
            target.scripts_queued.append(self)
        return super().__call__(keys, args, client)


def _load_missing(client: Redis | RedisCluster, scripts: list[Script]) -> None:
    """SCRIPT LOAD each of `scripts` that `client` (a node, or every primary of a cluster)
    lacks."""
    unique = list({script.sha: script for script in scripts}.values())
    present = client.script_exists(*(script.sha for script in unique))
    for script, found in zip(unique, present, strict=True):
        if not found:
            script.sha = client.script_load(script.script)


class ScriptLoadingTransaction(TransactionStrategy):
    """redis-py's cluster transaction, with the pipeline's queued scripts loaded on the node of
    each attempt before its MULTI (see the module doc). A failure to load is a connection error
    of that attempt, retried like one."""

    def _get_client_and_connection_for_transaction(self) -> Any:
        redis_node, connection = super()._get_client_and_connection_for_transaction()
        queued = getattr(self._pipe, "scripts_queued", None)
        if queued:
            _load_missing(redis_node, queued)
        return redis_node, connection


class RQClusterPipeline(RidesOutMigrations, ClusterPipeline):
    """The cluster pipeline with the two attributes RQ reads on a plain pipeline, the scripts
    queued on it loaded before it runs (and, for a transaction, before each attempt), and its
    commands sent again while their slot migrates."""

    scripts_queued: list[Script]
    parent: RedisCluster

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        try:
            if self.scripts_queued and not isinstance(
                self._execution_strategy, ScriptLoadingTransaction
            ):
                _load_missing(self.parent, self.scripts_queued)  # SCRIPT LOAD: every primary
            if isinstance(self._execution_strategy, TransactionStrategy):
                return run_transaction(
                    self, lambda: super(RQClusterPipeline, self).execute(raise_on_error)
                )
            return super().execute(raise_on_error)
        finally:
            self.scripts_queued = []

    def watch(self, *names: Any) -> Any:
        return until_migrated(lambda: super(RQClusterPipeline, self).watch(*names))

    @property
    def watching(self) -> bool:
        return bool(getattr(self._execution_strategy, "_watching", False))

    @property
    def explicit_transaction(self) -> bool:
        return bool(getattr(self._execution_strategy, "_explicit_transaction", False))


class RQCluster(RidesOutMigrations, RedisCluster):
    """A cluster client whose pipelines are transactions unless asked otherwise (as with
    `redis.Redis`), and expose what RQ reads on them; it rides out slot migrations."""

    def pipeline(self, transaction: Any = True, shard_hint: Any = None) -> RQClusterPipeline:
        pipe = super().pipeline(transaction=transaction, shard_hint=shard_hint)
        # Same objects, same state: only the read-only properties and the script loading
        # above are added (the constructor calls in RedisCluster.pipeline are not repeated
        # here, so they cannot drift).
        pipe.__class__ = RQClusterPipeline
        if type(pipe._execution_strategy) is TransactionStrategy:
            pipe._execution_strategy.__class__ = ScriptLoadingTransaction
        pipe.scripts_queued = []  # type: ignore[attr-defined]
        pipe.parent = self  # type: ignore[attr-defined]
        return pipe  # type: ignore[return-value]

    def register_script(self, script: Any) -> ClusterScript:
        return ClusterScript(self, script)


def client_of(pipe: Pipeline | RQClusterPipeline) -> Redis:
    """A client for commands to run now on the Redis a pipeline writes to: a plain pipeline's
    pool, or the `RQCluster` an `RQClusterPipeline` came from (a cluster pipeline has no single
    connection pool)."""
    if isinstance(pipe, RQClusterPipeline):
        return pipe.parent  # type: ignore[return-value]
    return Redis(connection_pool=pipe.connection_pool)
