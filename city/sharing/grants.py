"""Grants, delegation, break-glass: time-bound, purpose-limited permissions and their chains.

`check_new_grant` says whether a grant may be created, `descendants` what a revocation
cascades to, and `GrantSet` indexes the grants in force, each narrowed to its ancestors.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from city.patterns import _check_patterns, pattern_covered, type_matcher

_SLUG = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
_PURPOSE = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")


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
