"""Who may receive what: subscriptions, sharing policies, grants, delegation, break-glass.

The producing department owns its events. Across departments the default is deny; an event
reaches another department's subscription only when

1. the subscription wants it (event type pattern + attribute filter + spatial scope), and
2. a *permit* policy of the owner, or an active *grant*, covers (owner, event type,
   recipient, the subscription's declared purpose), and
3. no *forbid* policy matches (a forbid beats every permit and grant; only a declared
   break-glass emergency overrides it, loudly).

Only the data fields allowed for that purpose travel (`Decision.fields`, `Decision.redact`,
applied by `view`), and the delivered event carries the purpose.

Everything is compiled once per config / grant-set version: filters become plain Python
closures (no interpreter per event), policies and grants are indexed, and the decision for an
(owner, type, recipient, purpose) key is built once into a *plan*, so the hot path is a dict
lookup plus the few compiled predicates that depend on the event itself.

The router's per-batch API::

    auth = Authorizer(policy_set, grant_set)       # cache it per (policy, grant) version
    for sub in subscriptions.for_type(event["type"]):
        decision = auth.decide(event, sub, now)      # now = time.time(), once per batch
        if decision.allow:
            deliver(sub.dept, view(event, decision))
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from city.errors import ConfigError
from city.rules import RuleConfig

Predicate = Callable[[Mapping[str, Any]], bool]
_MISSING: Any = object()
_SLUG = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
_PATTERN = re.compile(r"^(\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*)?)$")
_PURPOSE = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")


# --------------------------------------------------------------------------------------------
# Attribute filters
# --------------------------------------------------------------------------------------------


class FilterError(ValueError):
    """A filter that cannot be compiled; `where` is the path inside the filter."""

    def __init__(self, where: str, message: str):
        self.where = where
        super().__init__(f"{where or '<filter>'}: {message}")


def _getter(path: str, where: str) -> Callable[[Mapping[str, Any]], Any]:
    """A function reading an event attribute (``type``) or a data path (``data.severity``)."""
    if not isinstance(path, str) or not path or any(not p for p in path.split(".")):
        raise FilterError(where, f"attribute path {path!r} must be 'name' or 'data.field'")
    parts = path.split(".")
    if len(parts) == 1:
        name = parts[0]
        return lambda e: e.get(name, _MISSING)
    if len(parts) == 2:
        first, second = parts

        def get2(e: Mapping[str, Any]) -> Any:
            inner = e.get(first)
            return inner.get(second, _MISSING) if isinstance(inner, dict) else _MISSING

        return get2

    def get_n(e: Mapping[str, Any]) -> Any:
        value: Any = e
        for part in parts:
            if not isinstance(value, dict):
                return _MISSING
            value = value.get(part, _MISSING)
        return value

    return get_n


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _comparison(
    op: str, get: Callable[[Mapping[str, Any]], Any], operand: Any, where: str
) -> Predicate:
    if _is_number(operand):
        same_kind: Callable[[Any], bool] = _is_number
    elif isinstance(operand, str):

        def same_kind(v: Any) -> bool:
            return isinstance(v, str)

    else:
        raise FilterError(where, f"{op} needs a number or a string, not {operand!r}")
    if op == "lt":
        return lambda e: same_kind(v := get(e)) and v < operand
    if op == "le":
        return lambda e: same_kind(v := get(e)) and v <= operand
    if op == "gt":
        return lambda e: same_kind(v := get(e)) and v > operand
    return lambda e: same_kind(v := get(e)) and v >= operand


def _leaf(op: str, path: str, operand: Any, where: str) -> Predicate:
    get = _getter(path, where)
    if op in ("eq", "exact"):
        if isinstance(operand, dict | list):
            raise FilterError(where, f"{op} compares with a single value, not {operand!r}")
        # bool is an int in Python: keep True from equalling 1.
        if isinstance(operand, bool) or _is_number(operand):
            kind = bool if isinstance(operand, bool) else (int, float)
            return lambda e: (
                (isinstance(v := get(e), kind) and isinstance(v, bool) == isinstance(operand, bool))
                and v == operand
            )
        return lambda e: get(e) == operand
    if op == "ne":
        inner = _leaf("eq", path, operand, where)
        return lambda e: not inner(e)
    if op == "in":
        if not isinstance(operand, list) or not operand:
            raise FilterError(where, "in needs a non-empty list of values")
        if any(isinstance(v, dict | list) for v in operand):
            raise FilterError(where, "in values must be strings, numbers or booleans")
        if any(isinstance(v, bool) for v in operand):
            options = [_leaf("eq", path, v, where) for v in operand]
            return lambda e: any(o(e) for o in options)
        values = frozenset(operand)
        return lambda e: (
            (v := get(e)) is not _MISSING and not isinstance(v, dict | list | bool) and v in values
        )
    if op in ("lt", "le", "gt", "ge"):
        return _comparison(op, get, operand, where)
    if op in ("prefix", "suffix"):
        if not isinstance(operand, str):
            raise FilterError(where, f"{op} needs a string")
        if op == "prefix":
            return lambda e: isinstance(v := get(e), str) and v.startswith(operand)
        return lambda e: isinstance(v := get(e), str) and v.endswith(operand)
    raise FilterError(where, f"unknown operator {op!r}")  # pragma: no cover - guarded by caller


_LEAF_OPS = ("eq", "exact", "ne", "in", "lt", "le", "gt", "ge", "prefix", "suffix")


def _all(preds: Sequence[Predicate]) -> Predicate:
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda e: a(e) and b(e)
    items = tuple(preds)
    return lambda e: all(p(e) for p in items)


def _any(preds: Sequence[Predicate]) -> Predicate:
    items = tuple(preds)
    return lambda e: any(p(e) for p in items)


def _not(inner: Predicate) -> Predicate:
    return lambda e: not inner(e)


def _exists(get: Callable[[Mapping[str, Any]], Any]) -> Predicate:
    return lambda e: get(e) is not _MISSING


def compile_filter(spec: Any, where: str = "") -> Predicate:
    """Compile a filter into one Python predicate over the wire event dict.

    Dialect (after the CloudEvents Subscriptions API filters): a mapping of operators, all of
    which must hold. Leaf operators take ``{attribute_path: operand}`` mappings (every pair
    must hold): ``eq``/``exact``, ``ne``, ``in`` (list), ``lt``/``le``/``gt``/``ge`` (numbers
    or strings, never mixed), ``prefix``/``suffix`` (strings); ``exists`` takes a path or a
    list of paths. ``all``/``any`` take lists of filters, ``not`` one filter. Paths are event
    attributes (``type``, ``priority``) or data fields (``data.severity``). A missing
    attribute or a value of the wrong type makes a leaf false (``ne``: true).
    """
    if not isinstance(spec, dict) or not spec:
        raise FilterError(where, "a filter is a non-empty mapping of operators")
    preds: list[Predicate] = []
    for op, arg in spec.items():
        here = f"{where}.{op}" if where else op
        if op in _LEAF_OPS:
            if not isinstance(arg, dict) or not arg:
                raise FilterError(here, f"{op} takes a mapping {{attribute: value}}")
            preds.extend(_leaf(op, path, value, f"{here}.{path}") for path, value in arg.items())
        elif op == "exists":
            paths = [arg] if isinstance(arg, str) else arg
            if not isinstance(paths, list) or not paths:
                raise FilterError(here, "exists takes an attribute path or a list of them")
            for path in paths:
                get = _getter(path, here)
                preds.append(_exists(get))
        elif op in ("all", "any"):
            if not isinstance(arg, list) or not arg:
                raise FilterError(here, f"{op} takes a non-empty list of filters")
            subs = [compile_filter(s, f"{here}[{i}]") for i, s in enumerate(arg)]
            if op == "all":
                preds.append(_all(subs))
            else:
                preds.append(_any(subs))
        elif op == "not":
            preds.append(_not(compile_filter(arg, here)))
        else:
            raise FilterError(here, f"unknown operator {op!r}")
    return _all(preds)


# --------------------------------------------------------------------------------------------
# Event type patterns
# --------------------------------------------------------------------------------------------


def type_matcher(patterns: Iterable[str]) -> Callable[[str], bool]:
    """Exact types and prefixes (``traffic.*``; ``*`` = everything) -> one membership test."""
    exact: set[str] = set()
    prefixes: list[str] = []
    for pattern in patterns:
        if pattern == "*":
            return lambda t: True
        if pattern.endswith(".*"):
            prefixes.append(pattern[:-1])
        else:
            exact.add(pattern)
    frozen, pre = frozenset(exact), tuple(prefixes)
    if not pre:
        return frozen.__contains__
    return lambda t: t in frozen or t.startswith(pre)


def pattern_covered(child: str, parents: Iterable[str]) -> bool:
    """True when every type `child` matches is matched by one of `parents`."""
    for parent in parents:
        if parent == "*" or parent == child:
            return True
        if parent.endswith(".*"):
            stem = parent[:-1]
            if child != "*" and child.startswith(stem):
                return True
    return False


def _check_patterns(values: list[str]) -> list[str]:
    for value in values:
        if not _PATTERN.match(value):
            raise ValueError(f"{value!r} is neither an event type nor a prefix like 'traffic.*'")
    return values


def _check_filter(spec: dict[str, Any] | None) -> dict[str, Any] | None:
    if spec is not None:
        try:
            compile_filter(spec)
        except FilterError as exc:
            raise ValueError(str(exc)) from None
    return spec


# --------------------------------------------------------------------------------------------
# Subscriptions
# --------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AreaRef(_Strict):
    """Zones of one jurisdiction layer (an explicit subscription area)."""

    layer: str
    zones: list[str] | Literal["all"] = "all"


class SubscriptionSpec(_Strict):
    """A subscription with everything this module understands.

    `scope`: ``jurisdiction`` (the department's own zones), ``area`` (the zones in `area`) or
    ``citywide``. `filter`: see `compile_filter`. `purpose`: declared, and checked against
    the policies and grants. The city config's subscription model may be this one.
    """

    id: str
    types: list[str] = Field(min_length=1)
    scope: Literal["jurisdiction", "area", "citywide"] = "jurisdiction"
    area: list[AreaRef] | None = None
    filter: dict[str, Any] | None = None
    purpose: str = "operations"

    @field_validator("types")
    @classmethod
    def _types_ok(cls, v: list[str]) -> list[str]:
        return _check_patterns(v)

    @field_validator("filter")
    @classmethod
    def _filter_compiles(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        return _check_filter(v)

    @model_validator(mode="after")
    def _area_with_scope(self) -> SubscriptionSpec:
        if (self.scope == "area") != bool(self.area):
            raise ValueError("scope 'area' needs a non-empty `area:` (and only it takes one)")
        return self


ZoneKey = tuple[str, str]  # (layer, zone name); zone "*" = the whole layer


@dataclass(frozen=True, slots=True, eq=False)
class CompiledSubscription:
    """A subscription ready for the hot path."""

    dept: str
    id: str
    purpose: str
    types: tuple[str, ...]
    matches_type: Callable[[str], bool]
    predicate: Predicate | None
    scope: str
    zones: frozenset[ZoneKey] | None  # None: citywide

    def matches(self, event: Mapping[str, Any]) -> bool:
        """Type pattern and attribute filter (not the spatial scope)."""
        return self.matches_type(event["type"]) and (
            self.predicate is None or self.predicate(event)
        )

    def in_scope(self, event_zones: Iterable[ZoneKey]) -> bool:
        """Whether an event located in `event_zones` (layer, zone name) is inside the scope."""
        if self.zones is None:
            return True
        zones = self.zones
        return any(z in zones or (z[0], "*") in zones for z in event_zones)


def _zones(refs: Iterable[Any]) -> frozenset[ZoneKey]:
    out: set[ZoneKey] = set()
    for ref in refs:
        if ref.zones == "all":
            out.add((ref.layer, "*"))
        else:
            out.update((ref.layer, z) for z in ref.zones)
    return frozenset(out)


def compile_subscription(dept: Any, sub: Any) -> CompiledSubscription:
    """Compile one subscription of `dept` (objects shaped like the city config's)."""
    spec = (
        sub
        if isinstance(sub, SubscriptionSpec)
        else SubscriptionSpec.model_validate(
            sub.model_dump() if hasattr(sub, "model_dump") else sub
        )
    )
    if spec.scope == "citywide":
        zones = None
    elif spec.scope == "area":
        zones = _zones(spec.area or ())
    else:
        zones = _zones(getattr(dept, "jurisdiction", ()) or ())
    return CompiledSubscription(
        dept=dept.id,
        id=spec.id,
        purpose=spec.purpose,
        types=tuple(spec.types),
        matches_type=type_matcher(spec.types),
        predicate=compile_filter(spec.filter) if spec.filter else None,
        scope=spec.scope,
        zones=zones,
    )


class SubscriptionIndex:
    """All subscriptions of a city, indexed by event type (computed once per type)."""

    def __init__(self, subscriptions: Iterable[CompiledSubscription]):
        self.all = tuple(subscriptions)
        self._by_id = {(s.dept, s.id): s for s in self.all}
        self._by_type: dict[str, tuple[CompiledSubscription, ...]] = {}

    def for_type(self, event_type: str) -> tuple[CompiledSubscription, ...]:
        found = self._by_type.get(event_type)
        if found is None:
            found = tuple(s for s in self.all if s.matches_type(event_type))
            self._by_type[event_type] = found
        return found

    def get(self, dept: str, sub_id: str) -> CompiledSubscription:
        found = self._by_id.get((dept, sub_id))
        if found is None:
            raise KeyError(f"no subscription {sub_id!r} of department {dept!r}")
        return found


def compile_subscriptions(departments: Iterable[Any]) -> SubscriptionIndex:
    """Every department's subscriptions (``CityConfig.departments``), compiled."""
    return SubscriptionIndex(
        compile_subscription(dept, sub) for dept in departments for sub in dept.subscriptions
    )


# --------------------------------------------------------------------------------------------
# Sharing policies (the `sharing:` config section)
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Grants, delegation, break-glass
# --------------------------------------------------------------------------------------------


class GrantError(ValueError):
    """A grant that may not be created (bad delegation, too long break-glass...)."""


def new_grant_id() -> str:
    return "g-" + uuid.uuid4().hex[:16]


class Grant(BaseModel):
    """A time-bound, purpose-limited permission for `grantee` to receive `owner`'s events.

    Valid from `valid_from` (inclusive) until `valid_until` (exclusive): expiry takes effect
    at that second with no job. `fields` None means all data fields. `parent` is set for a
    delegated grant; `delegate_depth` is how many further levels the grantee may re-grant.
    A break-glass grant (owner may be ``*``) also overrides forbid rules and is audited loudly.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default_factory=new_grant_id, min_length=1, max_length=64)
    owner: str
    grantee: str
    grantor: str
    types: tuple[str, ...] = Field(min_length=1)
    purposes: tuple[str, ...] = Field(min_length=1)
    fields: tuple[str, ...] | None = None
    valid_from: datetime
    valid_until: datetime
    parent: str | None = None
    delegate_depth: int = Field(default=0, ge=0, le=10)
    break_glass: bool = False
    reason: str = Field(default="", max_length=500)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    revoked_at: datetime | None = None
    revoked_by: str | None = None

    @field_validator("types")
    @classmethod
    def _types_ok(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_patterns(list(v)))

    @field_validator("purposes")
    @classmethod
    def _purposes_ok(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for p in v:
            if p != "*" and not _PURPOSE.match(p):
                raise ValueError(f"purpose {p!r}: lower-case words, digits, '-' or '_'")
        return v

    @field_validator("valid_from", "valid_until", "created_at", "revoked_at")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("times must carry a timezone")
        return v.astimezone(UTC) if v is not None else None

    @model_validator(mode="after")
    def _consistent(self) -> Grant:
        for name in ("grantee", "grantor"):
            if not _SLUG.match(getattr(self, name)):
                raise ValueError(f"{name} must be a department id")
        if self.owner != "*" and not _SLUG.match(self.owner):
            raise ValueError("owner must be a department id")
        if self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        if self.break_glass:
            if not self.reason.strip():
                raise ValueError("a break-glass grant needs a reason (the declared emergency)")
            if self.parent or self.delegate_depth:
                raise ValueError("a break-glass grant cannot be delegated")
        else:
            if self.owner == "*":
                raise ValueError("only a break-glass grant may name every owner ('*')")
            if "*" in self.purposes:
                raise ValueError("a grant names its purposes ('*' only for break-glass)")
        return self

    def active(self, now: float) -> bool:
        return (
            self.revoked_at is None
            and self.valid_from.timestamp() <= now < self.valid_until.timestamp()
        )


def check_new_grant(
    grant: Grant,
    existing: Mapping[str, Grant],
    now: float,
    break_glass_max_minutes: int = 240,
) -> None:
    """Raise `GrantError` unless `grant` may be created given the `existing` grants.

    A root grant is given by the owner itself. A delegated grant is given by the parent's
    grantee, only while the parent is active and allows re-granting, and never beyond the
    parent: same owner, covered types, a subset of purposes and fields, inside its validity.
    Break-glass is declared by the grantee for at most `break_glass_max_minutes`.
    """
    if grant.id in existing:
        raise GrantError(f"grant {grant.id} already exists")
    if grant.break_glass:
        if grant.grantor != grant.grantee:
            raise GrantError("break-glass is declared by the department that needs the data")
        minutes = (grant.valid_until - grant.valid_from).total_seconds() / 60
        if minutes > break_glass_max_minutes:
            raise GrantError(
                f"break-glass lasts at most {break_glass_max_minutes} minutes, not {minutes:.0f}"
            )
        return
    if grant.grantee == grant.owner:
        raise GrantError("a department needs no grant for its own data")
    if grant.parent is None:
        if grant.grantor != grant.owner:
            raise GrantError(f"only {grant.owner} may grant access to its data")
        return
    parent = existing.get(grant.parent)
    if parent is None:
        raise GrantError(f"parent grant {grant.parent} does not exist")
    problems: list[str] = []
    if parent.break_glass:
        problems.append("a break-glass grant cannot be delegated")
    if not parent.active(now):
        problems.append(f"parent grant {parent.id} is not active")
    if grant.grantor != parent.grantee:
        problems.append(f"only {parent.grantee} (the parent's grantee) may re-grant it")
    if parent.delegate_depth < 1:
        problems.append(f"parent grant {parent.id} does not allow re-granting")
    elif grant.delegate_depth > parent.delegate_depth - 1:
        problems.append(f"delegate_depth may be at most {parent.delegate_depth - 1}")
    if grant.owner != parent.owner:
        problems.append(f"owner must stay {parent.owner}")
    wide = [t for t in grant.types if not pattern_covered(t, parent.types)]
    if wide:
        problems.append(f"types {wide} exceed the parent's {list(parent.types)}")
    extra_purposes = sorted(set(grant.purposes) - set(parent.purposes))
    if extra_purposes:
        problems.append(f"purposes {extra_purposes} exceed the parent's")
    if parent.fields is not None and (
        grant.fields is None or set(grant.fields) - set(parent.fields)
    ):
        problems.append(f"fields must be within the parent's {list(parent.fields)}")
    if grant.valid_from < parent.valid_from or grant.valid_until > parent.valid_until:
        problems.append("validity must lie within the parent's")
    if problems:
        raise GrantError("; ".join(problems))


def descendants(grants: Mapping[str, Grant], grant_id: str) -> list[str]:
    """Ids of every grant delegated, directly or not, from `grant_id` (breadth first)."""
    children: dict[str, list[str]] = {}
    for g in grants.values():
        if g.parent is not None:
            children.setdefault(g.parent, []).append(g.id)
    out: list[str] = []
    queue = list(children.get(grant_id, ()))
    while queue:
        gid = queue.pop(0)
        out.append(gid)
        queue.extend(children.get(gid, ()))
    return out


@dataclass(frozen=True, slots=True, eq=False)
class _Grant:
    id: str
    matches_type: Callable[[str], bool]
    purposes: frozenset[str] | None
    fields: frozenset[str] | None
    start: float
    end: float
    break_glass: bool


class GrantSet:
    """The grants in force, compiled and indexed by (owner, grantee).

    A delegated grant counts only while its whole chain exists unrevoked; its window and
    fields are narrowed to its ancestors' (so a child can never exceed its parent, and
    revoking or expiring a parent ends every descendant at the same moment).
    """

    def __init__(self, grants: Iterable[Grant] = (), version: int | str = 0):
        self.grants = {g.id: g for g in grants}
        self.version = version
        self._index: dict[tuple[str, str], list[_Grant]] = {}
        for g in self.grants.values():
            effective = self.effective(g)
            if effective is not None:
                self._index.setdefault((g.owner, g.grantee), []).append(effective)

    def effective(self, g: Grant) -> _Grant | None:
        """`g` as it counts now: narrowed to every ancestor, or None if its chain is broken."""
        start, end = g.valid_from.timestamp(), g.valid_until.timestamp()
        fields = frozenset(g.fields) if g.fields is not None else None
        purposes = None if "*" in g.purposes else frozenset(g.purposes)
        matchers = [type_matcher(g.types)]
        node: Grant | None = g
        seen: set[str] = set()
        while node is not None:
            if node.revoked_at is not None or node.id in seen or node.owner != g.owner:
                return None
            seen.add(node.id)
            start = max(start, node.valid_from.timestamp())
            end = min(end, node.valid_until.timestamp())
            if node.fields is not None:
                fields = frozenset(node.fields) if fields is None else fields & set(node.fields)
            if node is not g:
                matchers.append(type_matcher(node.types))
                if purposes is not None:
                    purposes &= set(node.purposes)
            if node.parent is None:
                break
            node = self.grants.get(node.parent)
            if node is None:
                return None
        if len(matchers) == 1:
            matches_type = matchers[0]
        else:
            chain = tuple(matchers)
            matches_type = lambda t: all(m(t) for m in chain)  # noqa: E731
        return _Grant(
            id=g.id,
            matches_type=matches_type,
            purposes=purposes,
            fields=fields,
            start=start,
            end=end,
            break_glass=g.break_glass,
        )

    def candidates(self, owner: str, etype: str, recipient: str, purpose: str) -> list[_Grant]:
        found = [
            g
            for key in ((owner, recipient), ("*", recipient))
            for g in self._index.get(key, ())
            if g.matches_type(etype) and (g.purposes is None or purpose in g.purposes)
        ]
        return found


# --------------------------------------------------------------------------------------------
# Decisions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer for one (event, recipient subscription), with what it rests on.

    `fields`: data fields that may travel (None = all); `redact`: fields a forbid rule
    removes. `policy`/`grant`: the permit policy or grant that allowed it (or the forbid
    policy that denied it). `reason`: a short code, `detail` a sentence for people.
    """

    allow: bool
    reason: str
    purpose: str
    policy: str | None = None
    grant: str | None = None
    fields: frozenset[str] | None = None
    redact: frozenset[str] = frozenset()
    break_glass: bool = False
    detail: str = ""

    def audit_row(self, event_id: str, dept: str, sub_id: str) -> list[Any]:
        """The compact row a delivery audit record stores for this decision."""
        return [
            event_id,
            dept,
            sub_id,
            int(self.allow),
            self.reason,
            self.policy,
            self.grant,
            self.purpose,
        ]


def view(event: Mapping[str, Any], decision: Decision) -> dict[str, Any]:
    """The event as the recipient may see it: allowed fields only, carrying the purpose."""
    out = dict(event)
    data = event.get("data")
    if isinstance(data, dict) and (decision.fields is not None or decision.redact):
        keep, drop = decision.fields, decision.redact
        out["data"] = {
            k: v for k, v in data.items() if (keep is None or k in keep) and k not in drop
        }
    out["purpose"] = decision.purpose
    if decision.break_glass:
        out["breakglass"] = decision.grant or True
    return out


def _union(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    return None if a is None or b is None else a | b


PlanFn = Callable[[Mapping[str, Any], float], Decision]


class Authorizer:
    """Decisions for one (policy set, grant set) pair; plans are built once per key."""

    def __init__(self, policies: PolicySet, grants: GrantSet | None = None):
        self.policies = policies
        self.grants = grants or GrantSet()
        self._plans: dict[tuple[str | None, str, str, str], PlanFn] = {}
        self._no_match: dict[str, Decision] = {}

    def decide(self, event: Mapping[str, Any], sub: CompiledSubscription, now: float) -> Decision:
        """Allow or deny delivering `event` (wire dict) to `sub`, at epoch seconds `now`.

        Checks the subscription's type and filter too (not its spatial scope: the router's
        geo index does that, or `CompiledSubscription.in_scope`).
        """
        etype = event["type"]
        if not sub.matches_type(etype) or (sub.predicate is not None and not sub.predicate(event)):
            return self._no_match.get(sub.purpose) or self._no_match_for(sub.purpose)
        key = (event.get("department"), etype, sub.dept, sub.purpose)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._plan(*key)
        return plan(event, now)

    def _no_match_for(self, purpose: str) -> Decision:
        d = Decision(False, "no-match", purpose, detail="the subscription's types or filter")
        self._no_match[purpose] = d
        return d

    def _plan(self, owner: str | None, etype: str, recipient: str, purpose: str) -> PlanFn:
        if not owner:
            d = Decision(False, "no-owner", purpose, detail="event names no department")
            return lambda e, now: d
        if owner == recipient:
            d = Decision(True, "own-data", purpose, detail="a department's own events")
            return lambda e, now: d
        applicable = [
            p for p in self.policies.policies if p.applies(owner, etype, recipient, purpose) is None
        ]
        forbids = [(p.id, p.when) for p in applicable if p.effect == "forbid" and p.fields is None]
        field_forbids = [
            (p.id, p.when, p.fields)
            for p in applicable
            if p.effect == "forbid" and p.fields is not None
        ]
        permits = [(p.id, p.when, p.fields) for p in applicable if p.effect == "permit"]
        grants = self.grants.candidates(owner, etype, recipient, purpose)
        normal = [g for g in grants if not g.break_glass]
        glass = [g for g in grants if g.break_glass]
        static = (
            not normal
            and not glass
            and all(w is None for _, w in forbids)
            and all(w is None for _, w, _ in permits)
            and all(w is None for _, w, _ in field_forbids)
        )
        if static:
            # Depends on nothing but the key: decide now, return the constant.
            if forbids:
                d = Decision(False, "forbidden", purpose, policy=forbids[0][0])
            elif not permits:
                d = Decision(False, "no-permit", purpose, detail="default deny")
            else:
                fields: frozenset[str] | None = permits[0][2]
                for _, _, f in permits[1:]:
                    fields = _union(fields, f)
                redact = frozenset().union(*(f for _, _, f in field_forbids))
                d = Decision(
                    True,
                    "policy",
                    purpose,
                    policy=permits[0][0],
                    fields=_fields(fields, redact),
                    redact=_redact(fields, redact),
                )
            return lambda e, now: d

        memo: dict[tuple[Any, ...], Decision] = {}

        def cached(allow: bool, reason: str, **kw: Any) -> Decision:
            key = (allow, reason, *kw.values())
            d = memo.get(key)
            if d is None:
                d = memo[key] = Decision(allow, reason, purpose, **kw)
            return d

        def plan(e: Mapping[str, Any], now: float) -> Decision:
            forbidden = None
            for pid, when in forbids:
                if when is None or when(e):
                    forbidden = pid
                    break
            if forbidden is not None:
                for g in glass:
                    if g.start <= now < g.end:
                        return cached(
                            True,
                            "break-glass",
                            policy=forbidden,
                            grant=g.id,
                            fields=g.fields,
                            break_glass=True,
                            detail=f"break-glass overrides forbid {forbidden}",
                        )
                return cached(False, "forbidden", policy=forbidden)
            policy_id = grant_id = None
            fields: frozenset[str] | None = frozenset()
            for pid, when, f in permits:
                if when is None or when(e):
                    if policy_id is None:
                        policy_id, fields = pid, f
                    else:
                        fields = _union(fields, f)
            for g in normal:
                if g.start <= now < g.end:
                    if policy_id is None and grant_id is None:
                        fields = g.fields
                    else:
                        fields = _union(fields, g.fields)
                    if grant_id is None:
                        grant_id = g.id
            if policy_id is None and grant_id is None:
                for g in glass:
                    if g.start <= now < g.end:
                        return cached(
                            True,
                            "break-glass",
                            grant=g.id,
                            fields=g.fields,
                            break_glass=True,
                            detail="declared emergency",
                        )
                return cached(False, "no-permit", detail="default deny")
            redact: frozenset[str] = frozenset()
            for _, when, f in field_forbids:
                if when is None or when(e):
                    redact = redact | f
            key = (policy_id, grant_id, fields, redact)
            d = memo.get(key)
            if d is None:
                reason = "policy" if policy_id is not None else "grant"
                d = memo[key] = Decision(
                    True,
                    reason,
                    purpose,
                    policy=policy_id,
                    grant=grant_id,
                    fields=_fields(fields, redact),
                    redact=_redact(fields, redact),
                )
            return d

        return plan


def _fields(fields: frozenset[str] | None, redact: frozenset[str]) -> frozenset[str] | None:
    return fields - redact if fields is not None else None


def _redact(fields: frozenset[str] | None, redact: frozenset[str]) -> frozenset[str]:
    return redact if fields is None else frozenset()


# --------------------------------------------------------------------------------------------
# Explanations (slow path: `cityrelay policy explain`)
# --------------------------------------------------------------------------------------------


@dataclass
class Explanation:
    decision: Decision
    subscription: str
    steps: list[str] = field(default_factory=list)

    def text(self) -> str:
        d = self.decision
        verdict = "ALLOW" if d.allow else "DENY"
        head = f"{verdict} ({d.reason}) to subscription {self.subscription}, purpose {d.purpose!r}"
        extra = []
        if d.policy:
            extra.append(f"policy={d.policy}")
        if d.grant:
            extra.append(f"grant={d.grant}")
        if d.allow:
            extra.append("fields=" + ("all" if d.fields is None else ",".join(sorted(d.fields))))
            if d.redact:
                extra.append("redacted=" + ",".join(sorted(d.redact)))
        lines = [head + (" " + " ".join(extra) if extra else "")]
        lines.extend("  - " + s for s in self.steps)
        return "\n".join(lines)


def explain(
    auth: Authorizer, event: Mapping[str, Any], sub: CompiledSubscription, now: float
) -> Explanation:
    """The decision and every rule and grant that was considered, with its outcome."""
    decision = auth.decide(event, sub, now)
    out = Explanation(decision, f"{sub.dept}/{sub.id}")
    owner, etype = event.get("department"), event["type"]
    out.steps.append(f"event {event.get('id')} type {etype} owned by {owner}")
    if not sub.matches_type(etype):
        out.steps.append(f"subscription types {list(sub.types)} do not match {etype}")
        return out
    if sub.predicate is not None:
        out.steps.append(
            f"subscription filter: {'matches' if sub.predicate(event) else 'no match'}"
        )
    if owner == sub.dept:
        out.steps.append("own department: no policy needed")
        return out
    for p in auth.policies.policies:
        why_not = p.applies(str(owner), etype, sub.dept, sub.purpose)
        if why_not is not None:
            out.steps.append(f"policy {p.id} ({p.effect}): not applicable, {why_not}")
            continue
        cond = (
            "" if p.when is None else (", condition true" if p.when(event) else ", condition false")
        )
        fields = "all fields" if p.fields is None else f"fields {sorted(p.fields)}"
        out.steps.append(f"policy {p.id} ({p.effect}): applies{cond}, {fields}")
    for g in auth.grants.grants.values():
        if g.grantee != sub.dept or g.owner not in (owner, "*"):
            continue
        state = _grant_state(auth.grants, g, etype, sub.purpose, now)
        kind = "break-glass " if g.break_glass else ""
        out.steps.append(f"{kind}grant {g.id} (from {g.grantor}): {state}")
    if not decision.allow and decision.reason == "no-permit":
        out.steps.append("nothing permits it: default deny across departments")
    return out


def _grant_state(grants: GrantSet, g: Grant, etype: str, purpose: str, now: float) -> str:
    if not pattern_covered(etype, g.types):
        return f"types {list(g.types)} do not cover {etype}"
    if "*" not in g.purposes and purpose not in g.purposes:
        return f"purposes {list(g.purposes)} exclude {purpose!r}"
    if g.revoked_at is not None:
        return f"revoked at {g.revoked_at.isoformat()} by {g.revoked_by}"
    eff = grants.effective(g)
    if eff is None:
        return "a grant it was delegated from is revoked or gone"
    if now < eff.start:
        return f"not valid before {datetime.fromtimestamp(eff.start, UTC).isoformat()}"
    if now >= eff.end:
        return f"expired at {datetime.fromtimestamp(eff.end, UTC).isoformat()}"
    fields = "all fields" if eff.fields is None else f"fields {sorted(eff.fields)}"
    return f"active until {datetime.fromtimestamp(eff.end, UTC).isoformat()}, {fields}"
