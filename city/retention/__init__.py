"""The retention schedule: how long each kind of event is kept, where, and what happens after.
`durations` reads periods such as ``30d`` or ``7y`` (calendar years, as the law counts);
`series` holds one records series (types, hot window, end of hot, storage classes by age,
retention, trigger, disposition) and its decisions; `holds` the legal holds that block
disposition; `schedule` the ``retention:`` section as a whole and `parse_retention`; `example`
the example city's schedule. The package is pure (standard library, pydantic, `city.errors`,
`city.events`; its modules import each other directly, never this `__init__`): the archive,
lifecycle and disposition jobs ask it every question about time and classes, so the rules live
in one place and are tested without S3.
"""

from city.retention.durations import Duration
from city.retention.example import EXAMPLE_RETENTION
from city.retention.holds import Hold, HoldKind, blocking_holds
from city.retention.schedule import RetentionSchedule, parse_retention
from city.retention.series import (
    RESTORE_CLASSES,
    SERIES_ID,
    Disposition,
    EndOfHot,
    Series,
    StorageClass,
    StorageTier,
    Trigger,
    type_matches,
)

__all__ = [
    "EXAMPLE_RETENTION",
    "RESTORE_CLASSES",
    "SERIES_ID",
    "Disposition",
    "Duration",
    "EndOfHot",
    "Hold",
    "HoldKind",
    "RetentionSchedule",
    "Series",
    "StorageClass",
    "StorageTier",
    "Trigger",
    "blocking_holds",
    "parse_retention",
    "type_matches",
]
