"""Wiring for the RQ archive job: the retention schedule from the city YAML
(``$CITYRELAY_CONFIG``), the shard the job archives for (a partitioned city: its objects carry
the shard's name, so every shard shares the city's one bucket), the job's Redis connection, and
`archive_job`, the entry point the scheduler enqueues.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from redis import Redis

from city.config import PartitionsConfig
from city.retention import RetentionSchedule, parse_retention
from jobs import lake
from jobs.archive.archiver import Archiver
from queues.keys import Keys
from queues.partition import shard_of


def _city_yaml(path: str | Path | None) -> tuple[dict[str, Any], str | Path]:
    path = path or os.environ.get("CITYRELAY_CONFIG")
    if not path:
        raise RuntimeError(
            "no city config: set CITYRELAY_CONFIG to the city YAML with a retention: section"
        )
    return yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}, path


def load_schedule(path: str | Path | None = None) -> RetentionSchedule:
    """The ``retention:`` section of the city YAML (``$CITYRELAY_CONFIG``)."""
    data, path = _city_yaml(path)
    if "retention" not in data:
        raise RuntimeError(f"{path}: no retention: section (the schedule the archive follows)")
    return parse_retention(data["retention"], str(path))


def load_partitions(path: str | Path | None = None) -> PartitionsConfig | None:
    """The ``partitions:`` section of the city YAML (``$CITYRELAY_CONFIG``), None without."""
    data, _ = _city_yaml(path)
    raw = data.get("partitions")
    return None if raw is None else PartitionsConfig.model_validate(raw)


def archive_shard(
    prefix: str, path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The shard whose objects this process writes: for URL shards ``$CITYRELAY_SHARD``, for
    slot groups the group `prefix` names (`queues.partition.local_shard`); None when the city
    is not partitioned (object names without a shard, as before partitions)."""
    return shard_of(load_partitions(path), environ, prefix)


def job_redis() -> Redis:
    """The connection of the running RQ job, else ``$REDIS_URL``."""
    from rq import get_current_job

    job = get_current_job()
    if job is not None:
        return job.connection
    return Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))


def archive_job(prefix: str) -> dict[str, Any]:
    """RQ entry point (JSON-serializable argument and result)."""
    from queues.audit import AuditLog

    settings = lake.S3Settings.from_env()
    redis = job_redis()
    AuditLog(redis, Keys(prefix)).drain_inbox(actor="archive")  # quiet hours: chain what waits
    shard = archive_shard(prefix)
    archiver = Archiver(
        redis, Keys(prefix), settings.client(), settings.bucket, load_schedule(), shard=shard
    )
    return archiver.run().summary()
