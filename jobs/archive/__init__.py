"""The archive: windows past their hot time move from the Redis hot tier to S3, locked,
verified and trimmed exactly once (`archiver`), ``aggregate`` series keeping only hourly counts
per H3 cell (`aggregate`), S3 lifecycle rules from the retention schedule (`lifecycle`), and the
RQ job the scheduler enqueues with its wiring (`job`). Modules here import `city`, `queues`,
`jobs.lake` and each other, never `workers` or this ``__init__``. `archive_job` is re-exported
here so archive jobs enqueued before the split, recorded in Redis as
``jobs.archive.archive_job``, still run.
"""

from jobs.archive.aggregate import aggregate_counts
from jobs.archive.archiver import (
    DONE_TTL_S,
    LOCK_TIMEOUT_S,
    Archiver,
    ArchiveReport,
    VerificationError,
    WindowResult,
)
from jobs.archive.job import archive_job, archive_shard, job_redis, load_partitions, load_schedule
from jobs.archive.lifecycle import NONCURRENT_DAYS, apply_lifecycle, lifecycle_configuration

__all__ = [
    "DONE_TTL_S",
    "LOCK_TIMEOUT_S",
    "NONCURRENT_DAYS",
    "ArchiveReport",
    "Archiver",
    "VerificationError",
    "WindowResult",
    "aggregate_counts",
    "apply_lifecycle",
    "archive_job",
    "archive_shard",
    "job_redis",
    "lifecycle_configuration",
    "load_partitions",
    "load_schedule",
]
