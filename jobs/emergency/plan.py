"""The escalation plan: every department's validated ``escalation:`` and ``fallback:`` sections
with their channels built, once per process (channels keep their circuit breakers).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from city.config import CityConfig
from city.errors import ConfigError
from city.escalation import (
    DEFAULT_ESCALATION,
    EscalationConfig,
    parse_escalations,
)
from jobs.channels import (
    Channel,
    ChannelConfigError,
    Notification,
    build_channel,
    parse_channels,
)
from jobs.context import RouteContext

log = logging.getLogger("cityrelay.emergency")


@dataclass(frozen=True)
class ContactNotification(Notification):
    """A notification to one contact about a department's unacknowledged emergency; its
    idempotency key names the contact, so two contacts behind one gateway are not merged."""

    contact: str = ""

    @property
    def idempotency_key(self) -> str:
        return f"{self.event_id}:{self.department}:{self.level}:{self.contact}"


@dataclass
class ContactPlan:
    name: str
    role: str
    department: str | None
    channels: list[Channel]


@dataclass
class EscalationPlan:
    """Every department's escalation settings and fallback channels, validated and built."""

    departments: list[str]
    escalations: dict[str, EscalationConfig]
    fallback: dict[str, list[Channel]]
    contacts: dict[str, list[ContactPlan]] = field(default_factory=dict)

    @classmethod
    def from_config(
        cls,
        config: CityConfig,
        base_dir: Path | None = None,
        source: str | Path = "<config>",
        **channel_kwargs: Any,
    ) -> EscalationPlan:
        """Validate every ``fallback:`` and ``escalation:`` section; raises `ConfigError` with
        every problem, each with its path (``departments[3].fallback[0].url``...)."""
        escalations = parse_escalations({d.id: d.escalation for d in config.departments}, source)
        problems: list[tuple[str, str]] = []
        fallback: dict[str, list[Channel]] = {}
        contacts: dict[str, list[ContactPlan]] = {}

        def channels(raw: Any, where: str) -> list[Channel]:
            try:
                parsed = parse_channels(raw, where)
            except ChannelConfigError as exc:
                problems.extend(exc.problems)
                return []
            return [build_channel(c, base_dir=base_dir, **channel_kwargs) for c in parsed]

        for i, dept in enumerate(config.departments):
            fallback[dept.id] = channels(dept.fallback, f"departments[{i}].fallback")
            contacts[dept.id] = [
                ContactPlan(
                    c.name,
                    c.role,
                    c.department,
                    channels(c.channels, f"departments[{i}].escalation.chain[{j}].channels"),
                )
                for j, c in enumerate(escalations[dept.id].chain)
            ]
        if problems:
            raise ConfigError(source, problems)
        return cls(config.department_ids, escalations, fallback, contacts)

    def escalation(self, dept: str) -> EscalationConfig:
        return self.escalations.get(dept, DEFAULT_ESCALATION)


_plans: dict[int, tuple[CityConfig, EscalationPlan]] = {}


def plan_for(context: RouteContext) -> EscalationPlan:
    """The context's plan, built on first use (channels keep their circuit breakers).

    Config loading should have refused a bad section already; if one gets here anyway, the
    error is logged and every department gets the default deadlines and levels without
    channels: an emergency is always tracked and escalated through inboxes."""
    found = _plans.get(id(context))
    if found is None or found[0] is not context.config:
        try:
            plan = EscalationPlan.from_config(context.config, getattr(context, "base_dir", None))
        except ConfigError as exc:
            log.error("escalation config refused, using the defaults without channels:\n%s", exc)
            plan = EscalationPlan(context.config.department_ids, {}, {}, {})
        found = _plans[id(context)] = (context.config, plan)
    return found[1]


def use_plan(context: RouteContext, plan: EscalationPlan) -> None:
    """Install a plan built elsewhere (tests, or a process that built it at start-up)."""
    _plans[id(context)] = (context.config, plan)
