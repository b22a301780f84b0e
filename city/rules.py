"""Declarative rules that turn one event into derived events (the orchestrator idea).

A rule in the city config says: when an event of these types matches this filter, emit these
events. For example a ``health.emergency`` emits a ``transport.dispatch`` for the fleet and a
``police.escort`` request. Derived events are ordinary events: they carry the department that
issues them (the owner), so they go through routing and sharing policies like any other. Each
carries ``derivedfrom`` (the source event id), ``rule`` and ``dedupekey``; its id is derived
from the dedupe key, so reprocessing the same source yields the same ids and ingest dedupe
drops the repeats. ``ruledepth`` stops rules from feeding each other forever.

Pure: no I/O. Filters and type patterns are `city.filters` and `city.patterns`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from city.events import EVENT_TYPE, Priority
from city.filters import compile_filter
from city.patterns import type_matcher

MAX_DEPTH = 3
_NAMESPACE = uuid.UUID("6f1d8c52-3c2a-4c0e-9d38-8a7f6e2b1c11")
_REF = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WhenConfig(_Strict):
    types: list[str] = Field(min_length=1)
    filter: dict[str, Any] | None = None


class EmitConfig(_Strict):
    """One derived event. In `data`, a string ``"$path"`` copies that source value
    (``$data.kind``, ``$id``, ``$location``); ``"$$..."`` is a literal ``$...``."""

    type: str
    department: str
    data: dict[str, Any] = Field(default_factory=dict)
    priority: Priority | None = None
    subject: str | None = None

    @field_validator("type")
    @classmethod
    def _type_ok(cls, v: str) -> str:
        if not EVENT_TYPE.match(v):
            raise ValueError("event type must be dotted lower-case words")
        return v


class RuleConfig(_Strict):
    """``sharing.rules[]``: `dedupe` is a template (``{id}``, ``{data.incident_number}``)."""

    id: str
    description: str = ""
    when: WhenConfig
    emit: list[EmitConfig] = Field(min_length=1)
    dedupe: str = "{id}"


class RuleError(ValueError):
    """A rule that cannot be applied to an event (a referenced value is missing)."""


_MISSING: Any = object()


def _lookup(event: Mapping[str, Any], path: str) -> Any:
    value: Any = event
    for part in path.split("."):
        if not isinstance(value, dict):
            return _MISSING
        value = value.get(part, _MISSING)
    return value


def _render_value(value: Any, event: Mapping[str, Any]) -> Any:
    if isinstance(value, str) and value.startswith("$"):
        if value.startswith("$$"):
            return value[1:]
        found = _lookup(event, value[1:])
        if found is _MISSING:
            raise RuleError(f"source event has no {value[1:]!r}")
        return found
    if isinstance(value, dict):
        return {k: _render_value(v, event) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_value(v, event) for v in value]
    return value


def _render_text(template: str, event: Mapping[str, Any]) -> str:
    def sub(match: re.Match[str]) -> str:
        found = _lookup(event, match.group(1))
        if found is _MISSING:
            raise RuleError(f"source event has no {match.group(1)!r}")
        return str(found)

    return _REF.sub(sub, template)


@dataclass(frozen=True, slots=True, eq=False)
class CompiledRule:
    id: str
    matches_type: Callable[[str], bool]
    predicate: Callable[[Mapping[str, Any]], bool] | None
    emit: tuple[EmitConfig, ...]
    dedupe: str


@dataclass
class Derivation:
    events: list[dict[str, Any]]
    problems: list[str]


class RuleSet:
    """Compiled rules, indexed by event type."""

    def __init__(self, rules: Iterable[RuleConfig] = ()):
        self.rules = tuple(
            CompiledRule(
                id=r.id,
                matches_type=type_matcher(r.when.types),
                predicate=compile_filter(r.when.filter) if r.when.filter else None,
                emit=tuple(r.emit),
                dedupe=r.dedupe,
            )
            for r in rules
        )
        self._by_type: dict[str, tuple[CompiledRule, ...]] = {}

    def for_type(self, event_type: str) -> tuple[CompiledRule, ...]:
        found = self._by_type.get(event_type)
        if found is None:
            found = self._by_type[event_type] = tuple(
                r for r in self.rules if r.matches_type(event_type)
            )
        return found

    def derive(self, event: Mapping[str, Any]) -> Derivation:
        """Derived events (wire dicts) for `event`, and any rule that could not apply."""
        out = Derivation([], [])
        depth = int(event.get("ruledepth", 0))
        rules = self.for_type(event["type"])
        if not rules:
            return out
        if depth >= MAX_DEPTH:
            out.problems.append(f"event {event.get('id')}: rule depth {depth} reached, not derived")
            return out
        for rule in rules:
            if rule.predicate is not None and not rule.predicate(event):
                continue
            try:
                key = _render_text(rule.dedupe, event)
                out.events.extend(
                    _derived(rule, i, emit, key, event, depth) for i, emit in enumerate(rule.emit)
                )
            except RuleError as exc:
                out.problems.append(f"rule {rule.id} on event {event.get('id')}: {exc}")
        return out


def _derived(
    rule: CompiledRule, index: int, emit: EmitConfig, key: str, event: Mapping[str, Any], depth: int
) -> dict[str, Any]:
    derived: dict[str, Any] = {
        "id": uuid.uuid5(_NAMESPACE, f"{rule.id}|{index}|{key}").hex,
        "source": f"/city/{emit.department}/rules/{rule.id}",
        "specversion": "1.0",
        "type": emit.type,
        "time": event.get("time"),
        "datacontenttype": "application/json",
        "data": _render_value(emit.data, event),
        "department": emit.department,
        "derivedfrom": event.get("id"),
        "rule": rule.id,
        "dedupekey": key,
        "ruledepth": depth + 1,
    }
    priority = emit.priority or event.get("priority")
    if priority:
        derived["priority"] = str(priority)
    for attr in ("location", "h3cell"):
        if attr in event:
            derived[attr] = event[attr]
    if emit.subject is not None:
        derived["subject"] = _render_text(emit.subject, event)
    return derived
