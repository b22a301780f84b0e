"""Wiring for the RQ archive job: the retention schedule from the city YAML
(``$CITYRELAY_CONFIG``), the job's Redis connection, and `archive_job`, the entry point the
scheduler enqueues.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from redis import Redis

from city.retention import RetentionSchedule, parse_retention
from jobs import lake
from jobs.archive.archiver import Archiver
from queues.keys import Keys


def load_schedule(path: str | Path | None = None) -> RetentionSchedule:
    """The ``retention:`` section of the city YAML (``$CITYRELAY_CONFIG``)."""
    path = path or os.environ.get("CITYRELAY_CONFIG")
    if not path:
        raise RuntimeError(
            "no city config: set CITYRELAY_CONFIG to the city YAML with a retention: section"
        )
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if "retention" not in data:
        raise RuntimeError(f"{path}: no retention: section (the schedule the archive follows)")
    return parse_retention(data["retention"], str(path))


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
    archiver = Archiver(redis, Keys(prefix), settings.client(), settings.bucket, load_schedule())
    return archiver.run().summary()
