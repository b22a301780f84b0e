"""Shared fixtures: the demo city, fakeredis for unit tests, a real Redis for integration tests.

Integration tests find Redis at $REDIS_URL (default redis://127.0.0.1:6379/0). If none answers
and `redis-server` is installed, one is started on a free port. With CI=true and no Redis at all
the run fails loudly; elsewhere it falls back to the embedded fakeredis TCP server and the
summary says so. Every test works under its own key prefix and deletes only its own keys.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from redis import Redis

from city.config import CityConfig, load_city
from city.routing import Router
from queues.cleanup import delete_city
from queues.keys import Keys
from workers.standins import EmbeddedRedis, LocalRedisServer, redis_reachable

ROOT = Path(__file__).resolve().parent.parent
SEATTLE = ROOT / "examples" / "seattle" / "city.yaml"
SHARED_DATA = ROOT.parent / "shared" / "data"

_backend: dict[str, str] = {}
# Inputs tried at ingest: "n" JSON bodies (tests/unit/test_hostile_input.py), "cap" raw CAP
# documents (tests/unit/test_hostile_cap.py); "http": requests sent to the HTTP gateway
# (tests/integration/test_gateway_hostile.py), by kind in GATEWAY_HOSTILE.
HOSTILE_TRIED = {"n": 0, "cap": 0, "http": 0}
GATEWAY_HOSTILE: dict[str, int] = {}


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """`cityrelay` commands run in-process install their log handler on the root logger; put
    the root logger back after each test so one test's handler never writes into the next."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def seattle() -> tuple[CityConfig, Path]:
    return load_city(SEATTLE)


@pytest.fixture(scope="session")
def seattle_router(seattle: tuple[CityConfig, Path]) -> Router:
    config, base = seattle
    return Router.from_config(config, base)


@pytest.fixture
def keys() -> Keys:
    return Keys(f"t{uuid.uuid4().hex[:10]}")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    if redis_reachable(url):
        _backend["redis"] = f"real Redis at {url}"
        yield url
        return
    if LocalRedisServer.available():
        server = LocalRedisServer().start()
        _backend["redis"] = (
            f"real redis-server started on port {server.port} ({url} did not answer)"
        )
        yield server.url
        server.stop()
        return
    if os.environ.get("CI") == "true":
        pytest.fail(
            f"CI=true but no Redis answers at {url} and redis-server is not installed: "
            "integration tests need a real Redis",
            pytrace=False,
        )
    embedded = EmbeddedRedis().start()
    _backend["redis"] = "embedded fakeredis TCP server (no Redis and no redis-server found)"
    yield embedded.url
    embedded.stop()


def require_redis_server(why: str) -> None:
    """For tests that start, stop or reconfigure their own redis-server: CI must have one, so
    there a missing binary fails the test; elsewhere it is skipped, saying why."""
    if LocalRedisServer.available():
        return
    message = f"redis-server is not installed: {why}"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def write_city(
    tmp_path: Path, *, partitions: dict[str, object] | None = None, **routing: object
) -> Path:
    """The demo city with other routing settings (and a `partitions:` section), as a YAML file
    the processes can load."""
    doc = yaml.safe_load(SEATTLE.read_text())
    for layer in doc["layers"].values():
        layer["path"] = str((SEATTLE.parent / layer["path"]).resolve())
    doc["routing"].update(routing)
    if partitions is not None:
        doc["partitions"] = partitions
    path = tmp_path / "city.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def real_redis(redis_url: str, keys: Keys) -> Iterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    delete_city(client, keys)
    client.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if "redis" in _backend:
        terminalreporter.write_line(f"integration tests ran against: {_backend['redis']}")
    if HOSTILE_TRIED["n"] or HOSTILE_TRIED["cap"]:
        terminalreporter.write_line(
            f"hostile inputs tried at ingest: {HOSTILE_TRIED['n'] + HOSTILE_TRIED['cap']}"
            f" ({HOSTILE_TRIED['n']} JSON events, {HOSTILE_TRIED['cap']} CAP XML documents)"
        )
    if HOSTILE_TRIED["http"]:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(GATEWAY_HOSTILE.items()))
        terminalreporter.write_line(
            f"hostile requests tried at the HTTP gateway: {HOSTILE_TRIED['http']} ({kinds})"
        )
