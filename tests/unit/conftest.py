"""Unit tests run on fakeredis: fast, no server."""

import fakeredis
import pytest


@pytest.fixture
def redis():
    return fakeredis.FakeRedis()
