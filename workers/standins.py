"""Servers for machines that have none: an embedded Redis stand-in, a local redis-server, moto S3.

Used by the demo (so `make demo` works on a bare laptop) and by the test suite (to find or start
a Redis for the integration tests). Nothing here is used in production.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

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
    """A real `redis-server` child process on its own port, with its own data directory."""

    port: int = field(default_factory=free_port)
    appendonly: bool = False
    directory: Path | None = None
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
        args = [
            "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--dir", str(self.directory),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
        ]  # fmt: skip
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


def _wait_for(check: object, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s")
