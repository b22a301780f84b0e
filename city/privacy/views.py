"""Compiled views: the transforms for one (event type, recipient, purpose), and their note.

A `CompiledView` is built once per config version (by `policy.PrivacyPolicy`) from the
declaration. Per sharing entitlement (the decision's fields, redactions, purpose, break-glass)
it is narrowed once more into an `EntitledView`, whose `ViewPlan`s do the sharing policy's
field selection and the privacy transforms in one pass: per event a dict copy, one dict
comprehension and, at most, one HMAC per pseudonymised field. The `Note` says what shaped the
delivered view, for the audit row and the recipient.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from city.privacy.keys import KeyRing, period_of
from city.privacy.precedence import consent_applies
from city.privacy.transforms import (
    REDACTED,
    Op,
    _mask,
    bucket_time,
    cell_centre,
    generalise_location,
)
from city.sharing import Decision
from city.sharing import view as policy_view


class Note(NamedTuple):
    """What shaped one delivered view (for the audit row and the recipient).

    `transform`: the compiled transform set's id; `keys`: pseudonym key ids used;
    `consent`: ``n/a`` (basis is not consent), ``given``, ``absent``, ``withdrawn``,
    ``expired``, ``no-subject``; `action`: ``view``, ``strip`` or ``withhold``.
    """

    transform: str
    basis: str
    consent: str = "n/a"
    action: str = "view"
    keys: tuple[str, ...] = ()

    def audit(self) -> list[Any]:
        return [self.transform, self.basis, self.consent, self.action, list(self.keys)]


_NONE = Note(transform="none", basis="n/a")
_OWN = Note(transform="own-data", basis="n/a")


@dataclass(frozen=True, slots=True, eq=False)
class CompiledView:
    """The transforms for one (event type, recipient, purpose), built once."""

    id: str
    basis: str
    without_consent: str
    ops: dict[str, Op]  # data field -> op (fields absent here: dropped)
    keep: frozenset[str]  # fields kept as they are
    personal_keep: frozenset[str]  # ... when personal fields are stripped
    special: tuple[tuple[str, str, Any], ...]  # (field, op, argument) for the rest
    location: Op
    time: Op
    personal: frozenset[str]  # data fields a consent strip removes
    location_personal: bool
    period: str
    note: Note  # the note of a plain view (no consent gate, no pseudonym)


class ViewPlan:
    """A compiled view narrowed to one sharing entitlement, consent strip decided: the
    sharing policy's field selection (`city.sharing.view`) and the privacy transforms in one
    pass, so the work per event is a top-level copy, one dict comprehension over the data and,
    per pseudonymised field, one HMAC. Built once per (view, entitlement, strip) by
    `EntitledView`; the result is exactly the policy view transformed by the compiled view."""

    __slots__ = ("id", "keep", "special", "purpose", "breakglass", "location", "time", "period")

    def __init__(self, view: CompiledView, decision: Decision, strip: bool):
        fields, redact = decision.fields, decision.redact

        def travels(name: str) -> bool:  # what `city.sharing.view` lets through
            return (fields is None or name in fields) and name not in redact

        keep = view.personal_keep if strip else view.keep
        self.id = view.id
        self.keep = frozenset(name for name in keep if travels(name))
        self.special = tuple(
            (name, kind, arg)
            for name, kind, arg in view.special
            if travels(name) and not (strip and name in view.personal)
        )
        self.purpose = decision.purpose
        self.breakglass: Any = (decision.grant or True) if decision.break_glass else None
        loc = view.location
        self.location: Op = ("drop", None) if strip and view.location_personal else loc
        self.time = view.time[1] if view.time[0] == "bucket" else 0  # bucket seconds, or none
        self.period = view.period

    def apply(
        self, event: Mapping[str, Any], keys: KeyRing
    ) -> tuple[dict[str, Any], tuple[str, ...]]:
        """The view of `event` (a new dict; `event` is not modified) and the key ids used."""
        out = dict(event)
        used: tuple[str, ...] = ()
        data = event.get("data")
        if isinstance(data, dict):
            keep = self.keep
            new = {k: v for k, v in data.items() if k in keep}
            for name, kind, arg in self.special:
                if name not in data:
                    continue
                value = data[name]
                if value is None:
                    new[name] = None
                elif kind == "pseudonym":
                    signer = keys.signer(arg, period_of(event["time"], self.period))
                    if signer is None:
                        continue  # fail closed: no key, no value (no key id in the note)
                    new[name] = signer.pseudonym(value)
                    used += (signer.kid,)
                elif kind == "redact":
                    new[name] = REDACTED
                else:  # mask
                    new[name] = _mask(value, arg)
            out["data"] = new
        out["purpose"] = self.purpose
        if self.breakglass is not None:
            out["breakglass"] = self.breakglass
        loc, resolution = self.location
        if loc == "drop":
            out.pop("location", None)
            out.pop("h3cell", None)
        elif loc == "h3":
            cell = generalise_location(event, resolution)
            out.pop("location", None)
            if cell is None:
                out.pop("h3cell", None)
            else:
                out["h3cell"] = cell
                out["location"] = cell_centre(cell)
        if self.time:
            out["time"] = bucket_time(event["time"], self.time)
        if used:
            out["pseudokey"] = used[0] if len(used) == 1 else ",".join(sorted(set(used)))
        out["privacy"] = self.id
        return out, used


class EntitledView:
    """What one sharing entitlement (event type, recipient, purpose, fields, redact,
    break-glass) receives: its plain and consent-stripped plans, the consent gate, and the
    notes, all built once, so the privacy stage reads the consent state only when the view's
    lawful basis is consent. Without a compiled view (a type the section does not declare, or
    the producer's own data) it is the sharing policy's view with a fixed note."""

    __slots__ = ("_decision", "_notes", "basis", "gated", "id", "note", "plain", "stripped")
    NOTES_MAX = 4096

    def __init__(self, view: CompiledView | None, decision: Decision, note: Note = _NONE):
        self._decision = decision
        self._notes: dict[tuple[str, str, tuple[str, ...]], Note] = {}
        self.plain = None if view is None else ViewPlan(view, decision, strip=False)
        self.stripped: ViewPlan | None = None
        self.gated = False
        self.note = note
        if view is not None:
            self.id, self.basis, self.note = view.id, view.basis, view.note
            self.gated = consent_applies(view.basis, decision.break_glass)
            if self.gated and view.without_consent != "withhold":
                self.stripped = ViewPlan(view, decision, strip=True)

    def view(
        self, event: Mapping[str, Any], keys: KeyRing, consent: str = "n/a"
    ) -> tuple[dict[str, Any] | None, Note]:
        """The event as the recipient may see it (None: withheld) and the note.

        `consent`: the citizen's consent state for the purpose, read only when `gated`."""
        plain = self.plain
        if plain is None:
            return policy_view(event, self._decision), self.note
        if not self.gated:
            out, used = plain.apply(event, keys)
            return out, self._note("n/a", "view", used) if used else self.note
        if consent == "given":
            out, used = plain.apply(event, keys)
            return out, self._note(consent, "view", used)
        if self.stripped is None:
            return None, self._note(consent, "withhold", ())
        out, used = self.stripped.apply(event, keys)
        return out, self._note(consent, "strip", used)

    def _note(self, consent: str, action: str, used: tuple[str, ...]) -> Note:
        found = self._notes.get((consent, action, used))
        if found is None:
            if len(self._notes) >= self.NOTES_MAX:
                self._notes.clear()
            found = Note(self.id, self.basis, consent, action, used)
            self._notes[(consent, action, used)] = found
        return found
