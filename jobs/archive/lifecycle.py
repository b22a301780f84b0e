"""S3 lifecycle rules from the retention schedule: storage-class transitions per series and the
expiry of old object versions (deletion itself is the disposition job's).
"""

from __future__ import annotations

from typing import Any

from city.retention import RetentionSchedule
from jobs import lake

NONCURRENT_DAYS = 7


def lifecycle_configuration(schedule: RetentionSchedule) -> dict[str, Any]:
    """S3 lifecycle rules from the schedule: one rule per ``rc=`` prefix.

    Transitions follow the series' storage tiers (age counted from object creation; S3 does
    not transition objects under 128 KB, which is why objects are whole-window Parquet files).
    Expiration is *not* delegated to S3: the disposition job deletes, because it must respect
    legal holds and write the disposition record. Old versions (a rerun's overwrite, an
    anonymised original) expire after `NONCURRENT_DAYS`; Object Lock still protects locked ones.
    """
    rules: list[dict[str, Any]] = []
    for series in schedule.series:
        if series.end_of_hot == "drop":
            continue
        kind = lake.AGGREGATES if series.end_of_hot == "aggregate" else lake.EVENTS
        rule: dict[str, Any] = {
            "ID": f"rc-{series.id}",
            "Filter": {"Prefix": f"{kind}/rc={series.id}/"},
            "Status": "Enabled",
            "NoncurrentVersionExpiration": {"NoncurrentDays": NONCURRENT_DAYS},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        }
        transitions = [
            {"Days": tier.after.approx_days, "StorageClass": tier.storage_class}
            for tier in series.storage[1:]
        ]
        if transitions:
            rule["Transitions"] = transitions
        rules.append(rule)
    return {"Rules": rules}


def apply_lifecycle(s3: Any, bucket: str, schedule: RetentionSchedule) -> dict[str, Any]:
    config = lifecycle_configuration(schedule)
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration=config)
    return config
