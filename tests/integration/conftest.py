"""Integration tests run on a real Redis (see tests/conftest.py for how it is found)."""

import pytest

from tests.conftest import SEATTLE
from workers.cli import main


@pytest.fixture
def redis(real_redis):
    return real_redis


@pytest.fixture
def cli(redis_url, keys, monkeypatch):  # type: ignore[no-untyped-def]
    """`cityrelay ...` run in-process against the real Redis, under the test's prefix."""
    monkeypatch.setenv("REDIS_URL", redis_url)

    def run(*args: str) -> int:
        return main(["--prefix", keys.prefix, "--config", str(SEATTLE), *args])

    return run
