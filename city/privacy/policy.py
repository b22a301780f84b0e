"""The privacy policy: the compiled ``privacy:`` section that picks the view for a delivery.

From the declaration each (event type, recipient, purpose) gets one compiled *view*: a plan of
keep / drop / redact / mask / keyed pseudonym per data field, plus generalisation of the
location (a coarser H3 cell) and of the time (a bucket). Plans are compiled once per config
version and cached. Views only ever remove or coarsen what the sharing policy
(`city.sharing.view`) already let through: privacy cannot re-add a field a policy removed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from city.privacy.config import (
    DEFAULT_CLASS_TRANSFORMS,
    LOCATION,
    PERSONAL,
    TIME,
    PrivacyConfig,
    TypePrivacy,
    ViewRule,
)
from city.privacy.keys import KeyRing, consent_id
from city.privacy.transforms import Op, parse_transform
from city.privacy.views import _OWN, CompiledView, EntitledView, Note
from city.sharing import Decision


class PrivacyPolicy:
    """The compiled ``privacy:`` section: views per (type, recipient, purpose), cached."""

    ENTITLED_MAX = 10_000

    def __init__(self, config: PrivacyConfig, keys: KeyRing | None = None):
        self.config = config
        self.keys = keys or KeyRing({})
        self.version = config.version()
        specs: dict[str, Any] = dict(DEFAULT_CLASS_TRANSFORMS)
        specs.update(config.class_defaults)
        self.defaults = {cls: parse_transform(spec) for cls, spec in specs.items()}
        self._views: dict[tuple[str, str, str], CompiledView | None] = {}
        self._entitled: dict[tuple[Any, ...], EntitledView] = {}
        self._by_decision: dict[tuple[str, str, int], tuple[Decision, EntitledView]] = {}
        self._rules = {
            t: [
                (
                    None if "*" in r.recipients else frozenset(r.recipients),
                    None if "*" in r.purposes else frozenset(r.purposes),
                    r,
                    i,
                )
                for i, r in enumerate(tp.views)
            ]
            for t, tp in config.types.items()
        }

    def type(self, etype: str) -> TypePrivacy | None:
        return self.config.types.get(etype)

    def rule_for(self, etype: str, dept: str, purpose: str) -> tuple[ViewRule | None, int]:
        for recipients, purposes, rule, i in self._rules.get(etype, ()):
            if (recipients is None or dept in recipients) and (
                purposes is None or purpose in purposes
            ):
                return rule, i
        return None, -1

    def compiled(self, etype: str, dept: str, purpose: str) -> CompiledView | None:
        """The view for the key; None when the type declares nothing (unchanged delivery)."""
        key = (etype, dept, purpose)
        if key in self._views:
            return self._views[key]
        tp = self.config.types.get(etype)
        found = None if tp is None else self._compile(etype, tp, dept, purpose)
        self._views[key] = found
        return found

    def _compile(self, etype: str, tp: TypePrivacy, dept: str, purpose: str) -> CompiledView:
        rule, index = self.rule_for(etype, dept, purpose)
        given = {n: parse_transform(s) for n, s in (rule.transforms if rule else {}).items()}
        classes = tp.classes()

        def op_for(name: str) -> Op:
            op = given[name] if name in given else self.defaults[classes[name]]  # type: ignore[index]
            if op[0] == "pseudonym" and op[1] is None:
                op = ("pseudonym", dept)  # default domain: the recipient's own
            return op

        ops = {name: op_for(name) for name in tp.fields}
        ops = {n: op for n, op in ops.items() if op[0] != "drop"}
        location = given.get(LOCATION) or (
            "drop" if tp.location in ("direct", "sensitive") else "keep",
            None,
        )
        time = given.get(TIME) or ("keep", None)
        body = json.dumps(
            [etype, index, sorted(ops.items()), location, time, self.version], default=str
        )
        digest = hashlib.sha256(body.encode()).hexdigest()[:8]
        keep = {n for n, op in ops.items() if op[0] == "keep"}
        personal = frozenset(n for n, c in tp.fields.items() if c in PERSONAL)
        view_id = f"{etype}#{index if index >= 0 else 'default'}@{digest}"
        basis = rule.lawful_basis if rule and rule.lawful_basis else tp.lawful_basis
        return CompiledView(
            id=view_id,
            basis=basis,
            without_consent=(
                rule.without_consent if rule and rule.without_consent else tp.without_consent
            ),
            ops=ops,
            keep=frozenset(keep),
            personal_keep=frozenset(keep - personal),
            special=tuple((n, op[0], op[1]) for n, op in ops.items() if op[0] != "keep"),
            location=location,
            time=time,
            personal=personal,
            location_personal=tp.location in PERSONAL,
            period=self.config.pseudonym_period,
            note=Note(view_id, basis),
        )

    def consent_types(self) -> dict[str, TypePrivacy]:
        """Types with some consent-based view: their events need a consent lookup."""
        return {
            t: tp
            for t, tp in self.config.types.items()
            if tp.subject
            and (tp.lawful_basis == "consent" or any(v.lawful_basis == "consent" for v in tp.views))
        }

    def subject_id(self, event: Mapping[str, Any]) -> str | None:
        """The consent registry id of the citizen an event is about (None: no subject)."""
        tp = self.config.types.get(event.get("type", ""))
        if tp is None or tp.subject is None or self.keys.consent is None:
            return None
        data = event.get("data")
        value = data.get(tp.subject) if isinstance(data, dict) else None
        if value is None or value == "":
            return None
        return consent_id(self.keys.consent, tp.subject_kind or tp.subject, value)

    def entitled(self, etype: str, dept: str, decision: Decision) -> EntitledView:
        """The view of `etype` for `dept` under the entitlement `decision` carries (its
        fields, redactions, purpose, break-glass), built once per entitlement.

        The Authorizer hands out one Decision object per plan, so the first lookup is by that
        object (held in the entry, so its id is not reused while the entry lives)."""
        hit = self._by_decision.get((etype, dept, id(decision)))
        if hit is not None:
            return hit[1]
        found = self._entitle(etype, dept, decision)
        if len(self._by_decision) >= self.ENTITLED_MAX:
            self._by_decision.clear()
        self._by_decision[(etype, dept, id(decision))] = (decision, found)
        return found

    def _entitle(self, etype: str, dept: str, decision: Decision) -> EntitledView:
        key = (
            etype,
            dept,
            decision.purpose,
            decision.fields,
            decision.redact,
            decision.break_glass,
            decision.grant,
            decision.reason == "own-data",
        )
        found = self._entitled.get(key)
        if found is None:
            if len(self._entitled) >= self.ENTITLED_MAX:  # grants come and go: stay bounded
                self._entitled.clear()
            if decision.reason == "own-data":  # the producer already holds its data
                found = EntitledView(None, decision, _OWN)
            else:
                found = EntitledView(self.compiled(etype, dept, decision.purpose), decision)
            self._entitled[key] = found
        return found

    def view(
        self,
        event: Mapping[str, Any],
        dept: str,
        decision: Decision,
        consent: str = "n/a",
    ) -> tuple[dict[str, Any] | None, Note]:
        """The event as `dept` may see it under `decision`: policy selection, then privacy.

        `consent`: the citizen's consent state for the decision's purpose (``given``,
        ``absent``, ``withdrawn``, ``expired``, ``no-subject``), only read when the view's
        lawful basis is consent. Returns (None, note) when the rule withholds the event.
        """
        return self.entitled(event["type"], dept, decision).view(event, self.keys, consent)
