"""The Authorizer and its decisions: may this event reach this subscription, and with what.

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

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from city.sharing.grants import GrantSet
from city.sharing.policies import PolicySet
from city.sharing.subscriptions import CompiledSubscription


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
