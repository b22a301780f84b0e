"""Explanations (slow path: `cityrelay policy explain`): a decision with every rule and grant
that was considered, and why each did or did not count."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from city.patterns import pattern_covered
from city.sharing.authorizer import Authorizer, Decision
from city.sharing.grants import Grant, GrantSet
from city.sharing.subscriptions import CompiledSubscription


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
