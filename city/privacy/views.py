"""Compiled views: the transforms for one (event type, recipient, purpose), and their note.

A `CompiledView` is built once per config version (by `policy.PrivacyPolicy`) and applied to
every event of its key: a dict walk and, at most, one HMAC per pseudonymised field. The `Note`
says what shaped the delivered view, for the audit row and the recipient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from city.privacy.keys import KeyRing, period_of
from city.privacy.transforms import (
    REDACTED,
    Op,
    _mask,
    bucket_time,
    cell_centre,
    generalise_location,
)


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

    def apply(
        self, event: dict[str, Any], keys: KeyRing, strip: bool = False
    ) -> tuple[dict[str, Any], tuple[str, ...]]:
        """Transform a policy view in place (its top level is a fresh copy already, its
        `data` is replaced, never mutated); returns it and the key ids used."""
        out = event
        used: list[str] = []
        data = event.get("data")
        if isinstance(data, dict):
            keep = self.personal_keep if strip else self.keep
            new = {k: v for k, v in data.items() if k in keep}
            for name, kind, arg in self.special:
                if name not in data or (strip and name in self.personal):
                    continue
                value = data[name]
                if value is None:
                    new[name] = None
                elif kind == "pseudonym":
                    signer = keys.signer(arg, period_of(event["time"], self.period))
                    if signer is None:
                        continue  # fail closed: no key, no value (no key id in the note)
                    new[name] = signer.pseudonym(value)
                    used.append(signer.kid)
                elif kind == "redact":
                    new[name] = REDACTED
                else:  # mask
                    new[name] = _mask(value, arg)
            out["data"] = new
        loc = self.location[0]
        if strip and self.location_personal or loc == "drop":
            out.pop("location", None)
            out.pop("h3cell", None)
        elif loc == "h3":
            cell = generalise_location(event, self.location[1])
            out.pop("location", None)
            if cell is None:
                out.pop("h3cell", None)
            else:
                out["h3cell"] = cell
                out["location"] = cell_centre(cell)
        if self.time[0] == "bucket":
            out["time"] = bucket_time(event["time"], self.time[1])
        if used:
            out["pseudokey"] = used[0] if len(used) == 1 else ",".join(sorted(set(used)))
        return out, tuple(used)
