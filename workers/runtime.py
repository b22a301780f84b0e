"""Process-level wiring shared by the CLI and the workers: Redis URL, key prefix, city config.

Settings come from flags first, then the environment (``REDIS_URL``, ``CITYRELAY_PREFIX``,
``CITYRELAY_CONFIG``), then defaults, so the same command works on a laptop and in a Procfile.

On Redis Cluster (``redis+cluster://``) a process serves one slot group: the prefix must be a
hash tag (``{city}``) and RQ's keys go in the same slot (``RQ_KEY_PREFIX={city}:rq``, which RQ
reads once, at import). `use_rq_key_prefix` sets it before rq is imported (the CLI does);
`redis` refuses to hand out a cluster client when either is wrong, instead of the CROSSSLOT
errors that would follow.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis import Redis

from city.config import CityConfig, load_city
from queues.cluster import is_cluster_url
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

    @property
    def rq_key_prefix(self) -> str | None:
        """RQ's key prefix for a cluster URL (RQ's keys in this group's slot); None elsewhere."""
        return self.keys.cluster_rq_key_prefix if is_cluster_url(self.redis_url) else None

    def use_rq_key_prefix(self) -> None:
        """Set ``RQ_KEY_PREFIX`` for a cluster URL; must run before rq is imported."""
        wanted = self.rq_key_prefix
        if wanted is not None and "rq" not in sys.modules:
            os.environ.setdefault("RQ_KEY_PREFIX", wanted)

    def check_cluster(self) -> None:
        """Exit with a plain message unless this process can run on the cluster URL."""
        wanted = self.rq_key_prefix
        if wanted is None:
            return
        if not self.keys.slot_group:
            raise SystemExit(
                f"prefix {self.prefix!r} on Redis Cluster: use a hash tag such as "
                f"'{{{self.prefix}}}' (CITYRELAY_PREFIX) so every key is in one slot"
            )
        # What RQ really uses once imported (it reads the variable at its import only).
        actual = getattr(
            sys.modules.get("rq.defaults"), "RQ_KEY_PREFIX", os.environ.get("RQ_KEY_PREFIX", "rq")
        )
        if actual != wanted:
            raise SystemExit(
                f"RQ_KEY_PREFIX is {actual!r}; on Redis Cluster this group needs {wanted!r}, "
                "set before rq is imported (the cityrelay command does it)"
            )

    def redis(self, **kwargs: Any) -> Redis:
        """A client for this runtime's Redis (bytes replies: stream payloads are not decoded).

        Built by `redis_from_url`, so ``redis+sentinel://`` and ``redis+cluster://`` URLs work
        (the latter after `check_cluster`). By default it suits a one-shot command (a prompt
        error when Redis is unreachable); long-running processes pass ``**WORKER_SETTINGS`` to
        ride out restarts and failovers."""
        self.check_cluster()
        return redis_from_url(self.redis_url, **{**COMMAND_SETTINGS, **kwargs})

    def city(self) -> tuple[CityConfig, Path]:
        if self.config_path is None:
            raise SystemExit(
                "no city config: pass --config FILE or set CITYRELAY_CONFIG "
                "(the demo city is examples/seattle/city.yaml)"
            )
        return load_city(self.config_path)
