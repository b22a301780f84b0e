"""Emergency acknowledgement tracking and escalation: the plan built once per process from the
``escalation:`` and ``fallback:`` sections (`plan`), tracking called by the route job with the
first check scheduled at each deadline (`tracking`), the scheduled `escalate` job running levels
1-3 and scheduling the next (`levels`), and what each level's notices and fallback channels say
(`notices`). Modules here import `city`, `queues`, `jobs.channels`, `jobs.context` and each
other, never `workers` or this ``__init__``. `escalate` is re-exported here so escalation jobs
scheduled before the split, recorded in Redis as ``jobs.emergency.escalate``, still run.
"""

from jobs.emergency.levels import (
    ACTOR,
    FAILURE_TTL_S,
    JOB_TIMEOUT_S,
    escalate,
    job_id,
    run_level,
    schedule,
)
from jobs.emergency.notices import ENVELOPE_FIELDS, NOTICE_FIELDS, notice_event
from jobs.emergency.plan import ContactNotification, ContactPlan, EscalationPlan, plan_for, use_plan
from jobs.emergency.tracking import Recipients, recipients_of, track_emergencies

__all__ = [
    "ACTOR",
    "ENVELOPE_FIELDS",
    "FAILURE_TTL_S",
    "JOB_TIMEOUT_S",
    "NOTICE_FIELDS",
    "ContactNotification",
    "ContactPlan",
    "EscalationPlan",
    "Recipients",
    "escalate",
    "job_id",
    "notice_event",
    "plan_for",
    "recipients_of",
    "run_level",
    "schedule",
    "track_emergencies",
    "use_plan",
]
