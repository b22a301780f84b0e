"""Servers for machines that have none: an embedded Redis stand-in, a local redis-server, moto S3,
a local Mosquitto and a webhook endpoint on loopback.

Used by the demo (so `make demo` works on a bare laptop) and by the test suite (to find or start
a Redis for the integration tests). Nothing here is used in production.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from redis import Redis
from redis.exceptions import RedisError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_reachable(url: str, timeout: float = 0.5) -> bool:
    try:
        client = Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        return bool(client.ping())
    except (RedisError, OSError, ValueError):
        return False


@dataclass
class EmbeddedRedis:
    """fakeredis's TCP server in a thread: speaks RESP on a loopback port."""

    port: int = field(default_factory=free_port)
    _server: object | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        from fakeredis import TcpFakeServer

        server = TcpFakeServer(
            ("127.0.0.1", self.port),
            bind_and_activate=False,
            server_type="redis",
            server_version=(7, 4),
        )
        server.RequestHandlerClass = _handler_class()
        server.server_bind()
        server.server_activate()
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, name="fakeredis-tcp", daemon=True)
        thread.start()
        self._server = server
        _wait_for(lambda: redis_reachable(self.url), "embedded fakeredis server")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()  # type: ignore[attr-defined]
            self._server.server_close()  # type: ignore[attr-defined]
            self._server = None


def _handler_class() -> type:
    """fakeredis's request handler with two fixes for real clients.

    - Nagle's algorithm off: otherwise every pipelined reply waits ~40 ms.
    - An error reply (e.g. NOSCRIPT, BUSYGROUP) is sent as an error, keeping the connection;
      the stock handler closes the connection on any error, which breaks redis-py's script
      cache and RQ's workers.
    """
    import redis
    from fakeredis._clients._tcp_server import TCPFakeRequestHandler

    class Handler(TCPFakeRequestHandler):
        disable_nagle_algorithm = True

        def setup(self) -> None:
            super().setup()
            client = self.current_client
            if getattr(client, "_cityrelay_wrapped", False):
                return
            original = client.read_response

            def read_response(*args: object, **kwargs: object) -> object:
                try:
                    return original(*args, **kwargs)
                except redis.exceptions.ResponseError as error:
                    return error

            client.read_response = read_response  # type: ignore[method-assign]
            client._cityrelay_wrapped = True

    return Handler


@dataclass
class LocalRedisServer:
    """A real `redis-server` child process on its own port, with its own data directory.

    `replicaof` (host, port) starts it as a replica of another server (tests of failover).
    """

    port: int = field(default_factory=free_port)
    appendonly: bool = False
    directory: Path | None = None
    replicaof: tuple[str, int] | None = None
    _process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> LocalRedisServer:
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="cityrelay-redis-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--dir", str(self.directory),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
        ]  # fmt: skip
        if self.replicaof is not None:
            args += ["--replicaof", self.replicaof[0], str(self.replicaof[1])]
        args += ["--repl-diskless-sync-delay", "0"]  # replicas sync at once, not after 5 s
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for(lambda: redis_reachable(self.url), f"redis-server on port {self.port}")
        return self

    def stop(self, kill: bool = False) -> None:
        if self._process is None:
            return
        if kill:
            self._process.kill()
        else:
            self._process.terminate()
        self._process.wait(timeout=10)
        self._process = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def client(self, **kwargs: object) -> Redis:
        """A plain client straight to this server (not through any sentinel)."""
        return Redis(host="127.0.0.1", port=self.port, **kwargs)  # type: ignore[arg-type]


@dataclass
class LocalSentinel:
    """A real Redis Sentinel (`redis-server --sentinel`) watching one master, for tests.

    Short `down_after_ms` and `failover_timeout_ms` make a failover take a few seconds instead
    of the production defaults (30 s, 3 min). Sentinel rewrites its config file, so each one
    gets its own directory.
    """

    master_port: int
    service: str = "mymaster"
    quorum: int = 1
    down_after_ms: int = 1000
    failover_timeout_ms: int = 3000
    port: int = field(default_factory=free_port)
    directory: Path | None = None
    _process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> LocalSentinel:
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="cityrelay-sentinel-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.directory}\n"
            f"sentinel monitor {self.service} 127.0.0.1 {self.master_port} {self.quorum}\n"
            f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
            f"sentinel failover-timeout {self.service} {self.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {self.service} 1\n"
        )
        self._process = subprocess.Popen(
            ["redis-server", str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for(lambda: self.master() is not None, f"sentinel on port {self.port}")
        return self

    def client(self) -> Redis:
        return Redis(host="127.0.0.1", port=self.port, socket_timeout=1.0, decode_responses=True)

    def master(self) -> tuple[str, int] | None:
        """The master's address as this sentinel sees it now."""
        try:
            found = self.client().sentinel_get_master_addr_by_name(self.service)
        except (RedisError, OSError):
            return None
        return (found[0], int(found[1])) if found else None

    def replicas_known(self) -> int:
        """How many healthy replicas the sentinel has discovered (it learns them from INFO)."""
        try:
            replicas = self.client().sentinel_slaves(self.service)
        except (RedisError, OSError):
            return 0
        return sum(1 for r in replicas if not (r.get("is_sdown") or r.get("is_odown")))

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        self._process.wait(timeout=10)
        self._process = None


def sentinel_url(sentinels: list[LocalSentinel], service: str = "mymaster", db: int = 0) -> str:
    hosts = ",".join(s.address for s in sentinels)
    return f"redis+sentinel://{hosts}/{service}/{db}"


@dataclass
class EmbeddedS3:
    """moto's S3 server on a loopback port."""

    port: int = field(default_factory=free_port)
    _server: object | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> EmbeddedS3:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per S3 request
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()  # type: ignore[attr-defined]
            self._server = None


def mosquitto_binary() -> str | None:
    """Mosquitto on PATH (or where Debian puts it, /usr/sbin, often not on a user's PATH)."""
    found = shutil.which("mosquitto")
    if found is None and Path("/usr/sbin/mosquitto").exists():
        found = "/usr/sbin/mosquitto"
    return found


@dataclass
class LocalMosquitto:
    """A real Mosquitto on a free loopback port, with what the MQTT bridge's guarantees need:
    no limit on what the broker queues for a disconnected persistent session, and room for a
    whole batch in flight (workers/mqtt_bridge.py)."""

    port: int = field(default_factory=free_port)
    directory: Path | None = None
    _process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> LocalMosquitto:
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto is not installed")
        self.directory = self.directory or Path(tempfile.mkdtemp(prefix="cityrelay-mqtt-"))
        conf = self.directory / f"mosquitto-{self.port}.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            "max_queued_messages 0\nmax_inflight_messages 1000\npersistence false\n"
        )
        self._process = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_for(lambda: _listening(self.port), f"mosquitto on port {self.port}")
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None


class LoopbackWebhook:
    """A department's webhook endpoint on loopback (the demo, the tests). `verify(body,
    headers)` returns the payload or raises (then 401, counted in `bad_signatures`); while
    ``up[path]`` is False a verified POST gets 503 (counted in `refused`), else 200 and its
    messages are kept per path."""

    def __init__(self, verify: Callable[[bytes, dict[str, str]], Any] | None = None):
        self.verify = verify or (lambda body, headers: json.loads(body))
        self.up: dict[str, bool] = {}
        self.received: dict[str, list[dict[str, Any]]] = {}
        self.ids: list[str] = []  # webhook-id of each accepted POST
        self.refused = self.bad_signatures = 0
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                code = hook._take(self.path, body, dict(self.headers))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _take(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        try:
            payload = self.verify(body, headers)
        except Exception:
            with self.lock:
                self.bad_signatures += 1
            return 401
        with self.lock:
            if not self.up.get(path, True):
                self.refused += 1
                return 503
            self.received.setdefault(path, []).extend(payload["data"]["messages"])
            self.ids.append(headers.get("webhook-id", headers.get("Webhook-Id", "")))
            return 200

    def messages(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.received.get(path, []))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def _wait_for(check: object, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s")
