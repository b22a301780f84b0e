"""Riding out a slot migration (``redis-cli --cluster reshard``) on a cluster client.

While a slot migrates, its keys are split between two primaries: MIGRATE moves them a batch at
a time, each key (a whole stream, with its consumer groups) atomically. The nodes then refuse a
command without running it:

- ``ASK`` (source: none of the command's keys are here any more): try the target once, after
  ``ASKING``; ``MOVED`` once the slot has been handed over.
- ``TRYAGAIN``: a command naming several keys of the slot when some are on each node, or when
  one does not exist yet (the delivery script's marker, a fresh RQ job): on either node. For a
  slot group (queues/keys.py) this is nearly every multi-key call - the delivery script, the
  ingest MULTI, RQ's enqueue and job-end transactions - for as long as the slot migrates.
- A stream read blocked on the source when MIGRATE deletes the stream there ends with
  ``UNBLOCKED the stream key no longer exists``.

What redis-py 8.2's `RedisCluster` does with these (redis/cluster.py): a single command follows
MOVED and ASK, and retries TRYAGAIN 16 times, waiting 50 ms only for the last 8 (about 0.4 s
in all), then raises ``ClusterError("TTL exhausted.")``; UNBLOCKED is raised. A transaction
(MULTI/EXEC) raises TRYAGAIN at once (EXECABORT), and takes ASK for MOVED: it moves the slot to
the target in its map and retries there without ASKING, is sent back by MOVED, and so on until
its retries run out (its keys span both nodes, so it could not run there anyway). With WATCH
acknowledged it raises WatchError instead, which RQ's loops catch and retry at once. None of
these ran the command, so each is safe to send again; a process (ingest, a worker, the relay)
would instead end on the first one.

`RidesOutMigrations` makes the process's client (`queues.rq_cluster.RQCluster`) and its
pipelines send such a command again, pausing 10 ms growing to 200 ms, until the migration is
over or `MIGRATION_WAIT_S` has passed. A non-transactional pipeline already resends only its
refused commands through the single-command path, so that covers it. A watched transaction is
not resent (its reads may be stale): it ends in WatchError after a pause, and the caller's
loop (RQ's) starts over; once a thread's watched transactions have been refused for
`MIGRATION_WAIT_S` with none run in between (a slot left MIGRATING), the refusal itself is
raised instead, so that such a loop ends with an error rather than spinning forever. What
it costs: the slot group's multi-key work waits for the whole migration
(tests/integration/test_cluster_reshard.py prints how long it took).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from redis.exceptions import (
    AskError,
    ClusterError,
    ResponseError,
    TryAgainError,
    WatchError,
)

T = TypeVar("T")

MIGRATION_WAIT_S = 30.0  # a migration of one slot group's keys; beyond, the refusal is raised
FIRST_PAUSE_S, LONGEST_PAUSE_S = 0.01, 0.2
UNBLOCKED = "UNBLOCKED the stream key no longer exists"


def refused_during_migration(error: BaseException) -> bool:
    """True for a refusal that means the command did not run because its slot is migrating
    (MovedError is an AskError)."""
    if isinstance(error, (TryAgainError, AskError)):
        return True
    if isinstance(error, ClusterError):
        return "TTL exhausted" in str(error)  # redis-py's end of MOVED / ASK / TRYAGAIN retries
    return isinstance(error, ResponseError) and str(error).startswith(UNBLOCKED)


def until_migrated(call: Callable[[], T], wait_s: float = MIGRATION_WAIT_S) -> T:
    """`call()`, sent again after a pause each time a migration refuses it, for `wait_s`."""
    deadline = time.monotonic() + wait_s
    pause = FIRST_PAUSE_S
    while True:
        try:
            return call()
        except (ClusterError, ResponseError) as exc:
            if not refused_during_migration(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, LONGEST_PAUSE_S)


class RidesOutMigrations:
    """Mixin for `RedisCluster` and `ClusterPipeline`: every command sent to one node goes
    through `until_migrated` (single commands, and a non-transactional pipeline's resends)."""

    def _execute_command(self, target_node: Any, *args: Any, **kwargs: Any) -> Any:
        parent = super()._execute_command  # type: ignore[misc]
        return until_migrated(lambda: parent(target_node, *args, **kwargs))


_watched_refusals = threading.local()  # .since: when this thread's refusals began


def _refused_while_watching(refusal: BaseException) -> None:
    """Pause before the caller's WatchError loop (RQ's retries at once) starts over; raise
    `refusal` itself once this thread's watched transactions have been refused for
    `MIGRATION_WAIT_S` with none run in between (a slot left MIGRATING by an aborted reshard
    would otherwise make that loop spin forever without an error)."""
    now = time.monotonic()
    since = getattr(_watched_refusals, "since", None)
    if since is None:
        _watched_refusals.since = since = now
    if now - since > MIGRATION_WAIT_S:
        _watched_refusals.since = None  # the caller's next transaction gets its own wait
        raise refusal
    time.sleep(FIRST_PAUSE_S)


def run_transaction(pipe: Any, execute: Callable[[], list[Any]]) -> list[Any]:
    """`execute()` of a transactional cluster pipeline `pipe`, sent again with the same
    commands while a migration refuses it; a watched one ends in WatchError after a pause."""
    strategy = pipe._execution_strategy
    if strategy._watching:
        try:
            replies = execute()
        except (ClusterError, ResponseError) as exc:
            if not refused_during_migration(exc):
                raise
            _refused_while_watching(exc)
            raise WatchError("slot migrating while watching keys") from exc
        except WatchError as exc:
            if isinstance(exc.__cause__, (AskError, TryAgainError)):  # redis-py's own
                _refused_while_watching(exc.__cause__)
            raise
        _watched_refusals.since = None
        return replies
    queued = (
        list(strategy._command_queue),
        set(strategy._pipeline_slots),
        strategy._explicit_transaction,
        strategy._transaction_has_keyed_slot,
    )

    def again() -> list[Any]:
        # ClusterPipeline.execute resets the pipeline, even when it fails: queue it again.
        (
            strategy._command_queue,
            strategy._pipeline_slots,
            strategy._explicit_transaction,
            strategy._transaction_has_keyed_slot,
        ) = (list(queued[0]), set(queued[1]), queued[2], queued[3])
        return execute()

    return until_migrated(again)
