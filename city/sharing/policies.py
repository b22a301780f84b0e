"""Sharing policies: the ``sharing:`` config section, validated and compiled into a PolicySet.

A producing department's permit and forbid rules (which recipients may receive which types,
for which purposes, with which data fields), the break-glass limits, and the derived-event
rules the section also holds (their model is `city.rules.RuleConfig`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from city.errors import ConfigError
from city.filters import Predicate, _check_filter, compile_filter
from city.patterns import _check_patterns, type_matcher
from city.rules import RuleConfig
from city.sharing.strict import _Strict


class PolicyRule(_Strict):
    """One sharing rule of a producing department (`owner`).

    ``permit``: `recipients` may receive `types` for `purposes`, with only `fields` of the
    data (``"*"``: all). ``forbid`` beats any permit or grant: with ``fields: "*"`` (default)
    the event is not delivered at all; with a field list those fields are removed. `when` is an
    optional filter on the event.
    """

    id: str
    owner: str
    effect: Literal["permit", "forbid"] = "permit"
    recipients: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    types: list[str] = Field(min_length=1)
    purposes: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    fields: list[str] | Literal["*"] = "*"
    when: dict[str, Any] | None = None
    description: str = ""

    @field_validator("types")
    @classmethod
    def _types_ok(cls, v: list[str]) -> list[str]:
        return _check_patterns(v)

    @field_validator("when")
    @classmethod
    def _when_compiles(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        return _check_filter(v)


class BreakGlassConfig(_Strict):
    """Limits on emergency overrides."""

    max_minutes: int = Field(default=240, ge=1, le=7 * 24 * 60)


class SharingConfig(_Strict):
    """The ``sharing:`` section of the city config."""

    policies: list[PolicyRule] = Field(default_factory=list)
    rules: list[RuleConfig] = Field(default_factory=list)
    break_glass: BreakGlassConfig = Field(default_factory=BreakGlassConfig)


def _loc(loc: tuple[Any, ...]) -> str:
    out = "sharing"
    for item in loc:
        out += f"[{item}]" if isinstance(item, int) else f".{item}"
    return out


def parse_sharing(
    data: Any,
    source: str | Path = "<config>",
    departments: Iterable[str] | None = None,
) -> SharingConfig:
    """Validate a ``sharing:`` mapping; with `departments`, check the ids it names exist."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, [("sharing", "must be a mapping (policies:, rules:)")])
    try:
        config = SharingConfig.model_validate(data)
    except ValidationError as exc:
        errors = [(_loc(e["loc"]), e["msg"].removeprefix("Value error, ")) for e in exc.errors()]
        raise ConfigError(source, errors) from None
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    known = set(departments) if departments is not None else None
    for i, rule in enumerate(config.policies):
        where = f"sharing.policies[{i}]"
        if rule.id in seen:
            problems.append((f"{where}.id", f"duplicate policy id {rule.id!r}"))
        seen.add(rule.id)
        if known is not None:
            if rule.owner not in known:
                problems.append((f"{where}.owner", f"no department {rule.owner!r}"))
            for r in rule.recipients:
                if r != "*" and r not in known:
                    problems.append((f"{where}.recipients", f"no department {r!r}"))
    rule_ids: set[str] = set()
    for i, derived in enumerate(config.rules):
        where = f"sharing.rules[{i}]"
        if derived.id in rule_ids:
            problems.append((f"{where}.id", f"duplicate rule id {derived.id!r}"))
        rule_ids.add(derived.id)
        if known is not None:
            for j, emit in enumerate(derived.emit):
                if emit.department not in known:
                    problems.append(
                        (f"{where}.emit[{j}].department", f"no department {emit.department!r}")
                    )
    if problems:
        raise ConfigError(source, problems)
    return config


@dataclass(frozen=True, slots=True, eq=False)
class _Policy:
    id: str
    owner: str
    effect: str
    recipients: frozenset[str] | None
    matches_type: Callable[[str], bool]
    purposes: frozenset[str] | None
    fields: frozenset[str] | None
    when: Predicate | None
    rule: PolicyRule

    def applies(self, owner: str, etype: str, recipient: str, purpose: str) -> str | None:
        """None when this policy applies to the key, else why not."""
        if self.owner != owner:
            return f"owner is {self.owner}"
        if not self.matches_type(etype):
            return f"types {self.rule.types} do not match {etype}"
        if self.recipients is not None and recipient not in self.recipients:
            return f"recipients {self.rule.recipients} exclude {recipient}"
        if self.purposes is not None and purpose not in self.purposes:
            return f"purposes {self.rule.purposes} exclude {purpose!r}"
        return None


class PolicySet:
    """Compiled sharing policies; `version` is a digest of their definition (for audit)."""

    def __init__(self, rules: Iterable[PolicyRule] = ()):
        self.rules = tuple(rules)
        self.policies = tuple(
            _Policy(
                id=r.id,
                owner=r.owner,
                effect=r.effect,
                recipients=None if "*" in r.recipients else frozenset(r.recipients),
                matches_type=type_matcher(r.types),
                purposes=None if "*" in r.purposes else frozenset(r.purposes),
                fields=None if r.fields == "*" else frozenset(r.fields),
                when=compile_filter(r.when) if r.when else None,
                rule=r,
            )
            for r in self.rules
        )
        body = json.dumps([r.model_dump(mode="json") for r in self.rules], sort_keys=True)
        self.version = hashlib.sha256(body.encode()).hexdigest()[:16]

    @classmethod
    def from_config(cls, sharing: SharingConfig | None) -> PolicySet:
        return cls(sharing.policies if sharing else ())
