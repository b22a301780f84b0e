"""What an RQ worker process runs beside its work loop, and how each stops with it.

- `CityScheduler`: RQ's scheduler child process (forked by the worker that holds the scheduler
  lock of its queues), which also stops when its worker dies - even by SIGKILL, and runs on
  Redis Cluster too;
- `CommandListener`: the thread on the worker's RQ command channel, which stops within a
  second of being asked, whatever the state of its Redis connection.

workers/worker.py puts them in its `CityWorker`.
"""

from __future__ import annotations

import ctypes
import logging
import os
import random
import signal
import sys
import threading
from typing import Any

from redis.client import PubSub
from redis.cluster import ClusterPubSub, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq.scheduler import RQScheduler

log = logging.getLogger("cityrelay.worker")

# The command-channel thread looks for a stop request this often (it reads no less promptly:
# a message wakes it at once).
COMMANDS_POLL_S = 0.2  # a burst worker's teardown (tests, harnesses) waits for it
# After a connection error the command channel pauses this long (redis-py has already retried
# with backoff; the next read reconnects and subscribes again).
COMMANDS_PAUSE_S = 2.0
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class CityScheduler(RQScheduler):
    """RQ's scheduler process, which stops (releasing its locks) once its worker is gone.

    RQ forks it and never tells it that its worker died: after a SIGKILL it kept running,
    orphaned, holding the scheduler lock. On Linux the kernel now sends it SIGTERM (its stop
    request) the moment the worker dies; everywhere it also checks its parent once a second.

    On a cluster it keeps the worker's client: RQ rebuilds a single-node client from
    ``connection.connection_pool``, which a cluster client (a pool per node) does not have.
    Sharing it across the fork is safe: each node's redis-py pool drops the parent's sockets
    in a child process (its pid check)."""

    _worker_pid: int | None = None  # set when it forks; a burst worker runs it in-process
    _cluster: RedisCluster | None = None

    def __init__(self, queues: Any, connection: Any, **kwargs: Any) -> None:
        cluster = connection if isinstance(connection, RedisCluster) else None
        if cluster is not None:
            # RQ's constructor reads a single node's pool settings; any node's client has them
            # (never used: `connection` below answers with the cluster client).
            connection = cluster.get_default_node().redis_connection
        super().__init__(queues, connection, **kwargs)
        self._cluster = cluster

    @property
    def connection(self) -> Any:
        if self._cluster is not None:
            return self._cluster
        return super().connection

    def start(self) -> Any:
        self._worker_pid = os.getpid()
        return super().start()

    def work(self) -> None:  # in the forked child
        self._install_signal_handlers()  # before asking for the signal
        _signal_me_when_parent_dies(signal.SIGTERM)
        if self._worker_pid is not None and os.getppid() != self._worker_pid:
            self.request_stop()  # it died before the request took effect
        super().work()

    def enqueue_scheduled_jobs(self) -> None:
        if self._worker_pid is not None and os.getppid() != self._worker_pid:
            self.request_stop()
            return
        super().enqueue_scheduled_jobs()


def _signal_me_when_parent_dies(signum: int) -> bool:
    """prctl(PR_SET_PDEATHSIG): the kernel sends `signum` to this process when the thread that
    forked it exits (RQ forks the scheduler from the worker's main thread). Linux only."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


class CommandListener(threading.Thread):
    """Listens on a worker's RQ command channel (`rq:pubsub:{worker}`: shutdown, kill-horse,
    stop-job), in place of the redis-py PubSubWorkerThread RQ starts.

    RQ 3's teardown sends UNSUBSCRIBE, then calls that thread's stop(), which (redis-py 8.2)
    joins it without a timeout. When the thread read the UNSUBSCRIBE reply before stop() had
    cleared its flag - the main thread only needs to lose the CPU for a moment after its send,
    which a loaded machine does - its next get_message(timeout=60) found nothing subscribed and
    waited the whole 60 s for a subscription that never comes: the worker ignored SIGTERM for a
    minute (seen after a Sentinel failover, reproduced without one). This thread sends nothing
    to stop: it wakes every COMMANDS_POLL_S, sees `stopping`, and closes its connection (which
    ends the subscription on the server), so a stop never waits for Redis."""

    def __init__(self, pubsub: PubSub, worker_name: str):
        super().__init__(name=f"rq-commands-{worker_name}", daemon=True)
        self.pubsub = pubsub
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                try:
                    self.pubsub.get_message(ignore_subscribe_messages=True, timeout=COMMANDS_POLL_S)
                except (RedisConnectionError, RedisTimeoutError) as exc:
                    log.warning(
                        "command channel: %s; listening again in %s s", exc, COMMANDS_PAUSE_S
                    )
                    if not self.stopping.wait(COMMANDS_PAUSE_S):
                        self._move_off_failed_node()
        finally:
            self.pubsub.close()

    def _move_off_failed_node(self) -> None:
        """On Redis Cluster, subscribe again on another node.

        A cluster pubsub stays on the node it first connected to (the primary of the channel's
        slot) and reconnects only there: after that primary's SIGKILL and failover, the channel
        went deaf until the dead node was started again. A cluster forwards every PUBLISH to
        every node, so any other node serves; a failure here is retried after the next pause.
        (A plain client reconnects to its Redis; a Sentinel-managed one asks for the master.)
        """
        old = self.pubsub
        if not isinstance(old, ClusterPubSub):
            return
        failed = old.node.name if old.node is not None else None
        others = [node for node in old.cluster.get_nodes() if node.name != failed]
        if not others:
            return
        channels = {
            (name.decode() if isinstance(name, bytes) else name): handler
            for name, handler in old.channels.items()
        }
        fresh = old.cluster.pubsub(node=random.choice(others))
        try:
            fresh.subscribe(**channels)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            fresh.close()
            log.warning("command channel: %s; trying another node after the next pause", exc)
            return
        old.close()
        self.pubsub = fresh

    def stop(self, timeout: float) -> bool:
        """Ask it to stop; True once it has (within `timeout`)."""
        self.stopping.set()
        if threading.current_thread() is not self:
            self.join(timeout)
        return not self.is_alive()
