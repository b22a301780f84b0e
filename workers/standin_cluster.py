"""A real Redis Cluster on loopback for tests and benches: primaries and replicas started from
``redis-server --cluster-enabled yes`` on free ports, joined by ``redis-cli --cluster create``.

Nothing here is used in production. `stop` ends every node this object started (and only
those, by their process), so a test leaves no server behind even when it failed half-way.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from redis import Redis
from redis.crc import key_slot
from redis.exceptions import RedisError

from workers.standins import _wait_for, free_port


@dataclass
class LocalRedisCluster:
    """`primaries` primaries with `replicas` replicas each; short `node_timeout_ms` so a killed
    primary is failed over in about a second instead of the production 15 s."""

    primaries: int = 3
    replicas: int = 1
    node_timeout_ms: int = 1000
    directory: Path | None = None
    ports: list[int] = field(default_factory=list)
    _bus_ports: dict[int, int] = field(default_factory=dict)
    _processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None

    @property
    def url(self) -> str:
        """``redis+cluster://`` naming every node: any one of them is enough to find the rest."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start(self, timeout: float = 30.0) -> LocalRedisCluster:
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="cityrelay-cluster-"))
        count = self.primaries * (1 + self.replicas)
        # Client and bus ports, all distinct (the bus port defaults to port + 10000, past
        # 65535 for a high free port, so each node is given one).
        ports: list[int] = []
        while len(ports) < 2 * count:
            port = free_port()
            if port not in ports:
                ports.append(port)
        self.ports, self._bus_ports = (
            ports[:count],
            dict(zip(ports[:count], ports[count:], strict=True)),
        )
        try:
            for port in self.ports:
                self._start_node(port)
            for port in self.ports:
                _wait_for(partial(self._ping, port), f"cluster node on port {port}", timeout)
            subprocess.run(
                ["redis-cli", "--cluster", "create",
                 *[f"127.0.0.1:{port}" for port in self.ports],
                 "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                check=True, capture_output=True, timeout=timeout,
            )  # fmt: skip
            _wait_for(self.healthy, "cluster_state:ok on every node", timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, port: int) -> None:
        assert self.directory is not None
        node_dir = self.directory / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        args = [
            "redis-server",
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--cluster-enabled", "yes",
            "--cluster-port", str(self._bus_ports[port]),
            "--cluster-config-file", str(node_dir / "nodes.conf"),
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--dir", str(node_dir),
            "--save", "",
            "--appendonly", "no",
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip
        self._processes[port] = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def node(self, port: int) -> Redis:
        """A plain client straight to one node (CLUSTER INFO, ROLE, ...)."""
        return Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=1)

    def _ping(self, port: int) -> bool:
        try:
            with self.node(port) as client:
                return bool(client.ping())
        except RedisError:
            return False

    def healthy(self) -> bool:
        """Every running node says ``cluster_state:ok`` and sees every slot served."""
        for port in self.running_ports():
            try:
                with self.node(port) as client:
                    info = client.cluster("INFO")
            except RedisError:
                return False
            if info.get("cluster_state") != "ok":
                return False
        return True

    def running_ports(self) -> list[int]:
        return [port for port, proc in self._processes.items() if proc.poll() is None]

    def primary_ports(self) -> list[int]:
        """Ports of the nodes that are primaries now (after a failover, the promoted replicas)."""
        found = []
        for port in self.running_ports():
            try:
                with self.node(port) as client:
                    role = client.execute_command("ROLE")
            except RedisError:
                continue
            if role and role[0] in (b"master", "master"):
                found.append(port)
        return found

    def owner(self, key: str) -> int:
        """Port of the primary serving `key`'s slot now (CLUSTER SLOTS as a running node sees
        it)."""
        for port in self.running_ports():
            try:
                with self.node(port) as client:
                    slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
                    ranges = client.execute_command("CLUSTER", "SLOTS")
            except RedisError:
                continue
            for start, end, primary, *_ in ranges:
                if start <= slot <= end:
                    return int(primary[1])
        raise LookupError(f"no running node knows who serves {key!r}")

    def replicated(self, primary: int, replicas: int = 1) -> bool:
        """`primary` has `replicas` replicas online (initial sync done): a primary killed
        before that has no replica to fail over to."""
        try:
            with self.node(primary) as client:
                info = client.info("replication")
        except RedisError:
            return False
        online = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
        return sum(1 for v in online if v.get("state") == "online") >= replicas

    def replica_of(self, primary: int) -> int:
        """Port of `primary`'s first replica (as the primary reports it)."""
        with self.node(primary) as client:
            return int(client.info("replication")["slave0"]["port"])

    def restart(self, port: int, timeout: float = 30.0) -> None:
        """Start a killed node again on its port with its nodes.conf, as a supervisor would: a
        primary that was failed over comes back as a replica of the node that took its slots
        (with no persistence here, it then copies their data afresh)."""
        if self._processes[port].poll() is None:
            raise RuntimeError(f"node {port} is still running")
        self._start_node(port)
        _wait_for(partial(self._ping, port), f"cluster node on port {port}", timeout)

    def node_id(self, port: int) -> str:
        with self.node(port) as client:
            return str(client.execute_command("CLUSTER", "MYID").decode())

    def slot_owner(self, slot: int) -> int:
        """Port of the primary serving `slot`, as that primary itself says (CLUSTER SLOTS of
        every running node agree once a resharding has ended: `healthy` checks no more)."""
        for port in self.primary_ports():
            with self.node(port) as client:
                for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                    if start <= slot <= end and int(primary[1]) == port:
                        return port
        raise LookupError(f"no primary serves slot {slot}")

    def lowest_slot(self, port: int) -> int:
        """The lowest slot a primary serves: the one ``redis-cli --cluster reshard
        --cluster-slots 1 --cluster-from <it>`` moves (it takes a source's slots in order)."""
        with self.node(port) as client:
            ranges = client.execute_command("CLUSTER", "SLOTS")
        return min(int(start) for start, _, primary, *_ in ranges if int(primary[1]) == port)

    def reshard(self, source: int, destination: int, slots: int = 1, pipeline: int = 10) -> str:
        """``redis-cli --cluster reshard`` of `source`'s lowest `slots` slots to `destination`,
        as an operator runs it: SETSLOT IMPORTING / MIGRATING, MIGRATE ... KEYS in batches of
        `pipeline` keys, SETSLOT NODE. Returns its output; raises if it failed."""
        done = subprocess.run(
            ["redis-cli", "--cluster", "reshard", f"127.0.0.1:{source}",
             "--cluster-from", self.node_id(source), "--cluster-to", self.node_id(destination),
             "--cluster-slots", str(slots), "--cluster-pipeline", str(pipeline),
             "--cluster-yes"],
            check=True, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        return done.stdout

    def pid(self, port: int) -> int:
        return self._processes[port].pid

    def kill(self, port: int) -> None:
        """SIGKILL one node, as a crashed machine would stop."""
        proc = self._processes[port]
        proc.kill()
        proc.wait(timeout=10)

    def stop(self) -> None:
        for proc in self._processes.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self._processes.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


def tag_in_slot(slot: int, stem: str = "t") -> str:
    """A hash tag name (`stem` + a number) whose ``{name}`` keys hash to `slot`: about 16 384
    CRC16s to find one."""
    for n in range(1_000_000):
        if key_slot(f"{stem}{n}".encode()) == slot:
            return f"{stem}{n}"
    raise LookupError(f"no {stem}<n> in slot {slot}")  # pragma: no cover - CRC16 covers slots
