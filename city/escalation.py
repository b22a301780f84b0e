"""A department's ``escalation:`` section: how long it has to acknowledge an emergency, and who
is told, level by level, when it does not.

Every recipient of an emergency-priority event must acknowledge it within a deadline set by the
event's severity (CAP severity: Extreme, Severe, Moderate, Minor, Unknown; other events map their
own ``severity`` field onto these, or use ``default``). At the deadline, unacknowledged:

- level 1: the event is re-appended to the department's inbox as a reminder and the
  department's ``fallback:`` channels are tried;
- level 2 (``level_interval_s`` later): the escalation ``chain`` - supervisor, duty officer... -
  each contact reached through its own channels and/or its department's inbox;
- level 3: the ``coordinator`` (emergency management) and, with ``broadcast_all``, every
  department.

An acknowledgement stops escalation at once. Departments without the section get the defaults.
This module is pure (no Redis): the channel dicts inside contacts are validated by
`jobs.channels.parse_channels` where the channels are built.

```yaml
escalation:
  ack_deadline_s: {Extreme: 60, Severe: 120, default: 300}
  level_interval_s: 120
  max_level: 3
  chain:
    - {name: Battalion Chief on duty, role: supervisor,
       channels: [{kind: sms, url: https://sms.example/send, to: ["+12065550100"]}]}
    - {name: OEM duty officer, role: duty-officer, department: emergency-management}
  coordinator: emergency-management
  broadcast_all: true
```
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from city.errors import ConfigError

SEVERITIES = ("Extreme", "Severe", "Moderate", "Minor", "Unknown")
SeverityKey = Literal["Extreme", "Severe", "Moderate", "Minor", "Unknown", "default"]
DEFAULT_DEADLINES: dict[SeverityKey, float] = {"Extreme": 60.0, "Severe": 120.0, "default": 300.0}
DEFAULT_COORDINATOR = "emergency-management"
MAX_LEVEL = 3
# A numeric 1-5 severity (e.g. traffic.incident) read as CAP severity.
NUMERIC_SEVERITY = {5: "Extreme", 4: "Severe", 3: "Moderate", 2: "Minor", 1: "Minor"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Contact(_Strict):
    """Someone level 2 reaches: through their channels, their department's inbox, or both."""

    name: str = Field(min_length=1)
    role: str = Field(default="contact", min_length=1)
    department: str | None = None
    channels: list[dict[str, Any]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _reachable(self) -> Contact:
        if self.department is None and not self.channels:
            raise ValueError("a contact needs `channels:` or a `department:` to be reached")
        return self


class EscalationConfig(_Strict):
    ack_deadline_s: dict[SeverityKey, float] = Field(
        default_factory=lambda: dict(DEFAULT_DEADLINES)
    )
    level_interval_s: float = Field(default=120.0, gt=0, le=86_400)
    max_level: int = Field(default=MAX_LEVEL, ge=0, le=MAX_LEVEL)
    chain: list[Contact] = Field(default_factory=list)
    coordinator: str = DEFAULT_COORDINATOR
    broadcast_all: bool = True

    @field_validator("ack_deadline_s")
    @classmethod
    def _deadlines(cls, value: dict[SeverityKey, float]) -> dict[SeverityKey, float]:
        for key, seconds in value.items():
            if not 0 < seconds <= 86_400:
                raise ValueError(f"{key}: a deadline is between 0 and 86400 seconds")
        if "default" not in value:
            value = {**value, "default": DEFAULT_DEADLINES["default"]}
        return value

    def deadline_s(self, severity: str) -> float:
        """Seconds a recipient has to acknowledge an emergency of this severity."""
        return self.ack_deadline_s.get(severity, self.ack_deadline_s["default"])  # type: ignore[call-overload]


DEFAULT_ESCALATION = EscalationConfig()


def severity_of(event: Mapping[str, Any]) -> str:
    """The event's CAP severity: ``data.severity`` as a CAP word, a 1-5 number mapped onto
    them, else ``default``."""
    data = event.get("data")
    value = data.get("severity") if isinstance(data, Mapping) else None
    if isinstance(value, str) and value in SEVERITIES:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return NUMERIC_SEVERITY.get(value, "default")
    return "default"


def _path(where: str, loc: Iterable[Any]) -> str:
    path = where
    for part in loc:
        if part != "[key]":  # pydantic's marker for "the key of this dict entry"
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def parse_escalation(
    raw: Any,
    source: str | Path = "<config>",
    where: str = "escalation",
    departments: Iterable[str] | None = None,
) -> EscalationConfig:
    """Validate one department's ``escalation:`` section (None: the defaults).

    With `departments`, contact departments and the coordinator must be among them. Raises
    `ConfigError(source, [(path, message), ...])`."""
    if raw is None:
        config = DEFAULT_ESCALATION
    else:
        try:
            config = EscalationConfig.model_validate(raw)
        except ValidationError as exc:
            problems = [(_path(where, err["loc"]), err["msg"]) for err in exc.errors()]
            raise ConfigError(source, problems) from None
    if departments is not None:
        known = set(departments)
        problems = []
        for i, contact in enumerate(config.chain):
            if contact.department is not None and contact.department not in known:
                problems.append(
                    (f"{where}.chain[{i}].department", f"no department {contact.department!r}")
                )
        if config.coordinator not in known and raw is not None and "coordinator" in raw:
            problems.append((f"{where}.coordinator", f"no department {config.coordinator!r}"))
        if problems:
            raise ConfigError(source, problems)
    return config


def parse_escalations(
    sections: Mapping[str, Any], source: str | Path = "<config>"
) -> dict[str, EscalationConfig]:
    """Every department's section, by department id (in config order); all problems at once.

    `sections` maps department id -> raw section (``{d.id: d.escalation for d in
    config.departments}``). Paths say ``departments[i].escalation...``."""
    result: dict[str, EscalationConfig] = {}
    problems: list[tuple[str, str]] = []
    for i, (dept, raw) in enumerate(sections.items()):
        try:
            result[dept] = parse_escalation(raw, source, f"departments[{i}].escalation", sections)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(source, problems)
    return result
