"""The README's Python API example runs as written: published by one department, routed by the
same ingest and worker code the processes run, read and acknowledged by another department."""

from __future__ import annotations

import re
from pathlib import Path

import fakeredis
import pytest
from redis import Redis

from city.config import CityConfig
from city.routing import Router
from queues.keys import Keys
from tests.pipeline_harness import Harness

README = Path(__file__).resolve().parents[2] / "README.md"
ROUTED_HERE = "# ... the ingest consumer and a routine worker"


def python_example() -> tuple[str, str]:
    """The README's Python block, split where the processes do their work."""
    (block,) = re.findall(
        r"^## Python API\n.*?```python\n(.*?)```", README.read_text(), re.S | re.M
    )
    publish, marker, read = block.partition(ROUTED_HERE)
    assert marker, f"the README example lost its line {ROUTED_HERE!r}"
    return publish, read.partition("\n")[2]


def test_readme_python_example_runs_as_written(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    seattle: tuple[CityConfig, Path],
    seattle_router: Router,
) -> None:
    server = fakeredis.FakeServer()
    monkeypatch.setattr(Redis, "from_url", lambda url, **kw: fakeredis.FakeRedis(server=server))
    publish, read = python_example()
    namespace: dict[str, object] = {}
    exec(compile(publish, "README.md", "exec"), namespace)

    config, base = seattle
    redis = fakeredis.FakeRedis(server=server)
    assert Harness(redis, Keys("city"), config, base, seattle_router).run()["accepted"] == 1

    exec(compile(read, "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 1 and printed[0].startswith("traffic.incident ")
    assert "spd-west-incidents" in printed[0]
    assert redis.xpending(Keys("city").inbox("spd-west"), "spd-west")["pending"] == 0
