"""City scenarios run on a real Redis (see tests/conftest.py for how it is found)."""

import pytest


@pytest.fixture
def redis(real_redis):
    return real_redis
