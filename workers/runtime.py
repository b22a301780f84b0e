"""Process-level wiring shared by the CLI and the workers: Redis URL, key prefix, city config.

Settings come from flags first, then the environment (``REDIS_URL``, ``CITYRELAY_PREFIX``,
``CITYRELAY_CONFIG``), then defaults, so the same command works on a laptop and in a Procfile.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis import Redis

from city.config import CityConfig, load_city
from queues.connect import COMMAND_SETTINGS, redis_from_url
from queues.keys import Keys, default_prefix

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass
class Runtime:
    redis_url: str
    prefix: str
    config_path: Path | None

    @classmethod
    def from_env(
        cls,
        redis_url: str | None = None,
        prefix: str | None = None,
        config: str | Path | None = None,
    ) -> Runtime:
        config = config or os.environ.get("CITYRELAY_CONFIG")
        return cls(
            redis_url=redis_url or os.environ.get("REDIS_URL", DEFAULT_REDIS_URL),
            prefix=prefix or default_prefix(),
            config_path=Path(config) if config else None,
        )

    @property
    def keys(self) -> Keys:
        return Keys(self.prefix)

    def redis(self, **kwargs: Any) -> Redis:
        """A client for this runtime's Redis (bytes replies: stream payloads are not decoded).

        Built by `redis_from_url`, so ``redis+sentinel://`` URLs work. By default it suits a
        one-shot command (a prompt error when Redis is unreachable); long-running processes
        pass ``**WORKER_SETTINGS`` to ride out restarts and failovers."""
        return redis_from_url(self.redis_url, **{**COMMAND_SETTINGS, **kwargs})

    def city(self) -> tuple[CityConfig, Path]:
        if self.config_path is None:
            raise SystemExit(
                "no city config: pass --config FILE or set CITYRELAY_CONFIG "
                "(the demo city is examples/seattle/city.yaml)"
            )
        return load_city(self.config_path)
