"""Privacy impact assessments: the record, its life cycle, the gate, the automatic risk checks.

Each integration (source department + event type) needs an approved, unexpired PIA before
its events may flow. The PIA lists the fields it covers with their classes, so an event that
carries a field the PIA never assessed is stopped too. A PIA is approved against a
*fingerprint* of the integration as configured (the type's privacy declaration and the
recipients that subscribe to it): any change to the integration changes the fingerprint and
the PIA counts as a draft again until someone re-approves it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from city.privacy.config import LOCATION, TIME, FieldClass, LawfulBasis, PrivacyConfig
from city.privacy.policy import PrivacyPolicy

Status = Literal["draft", "submitted", "approved", "rejected"]


class Pia(BaseModel):
    """One privacy impact assessment record."""

    model_config = ConfigDict(extra="forbid")

    department: str
    type: str
    description: str = Field(min_length=1, max_length=4000)
    purposes: list[str] = Field(min_length=1)
    fields: dict[str, FieldClass]
    recipients: list[str] = Field(default_factory=list)
    lawful_basis: LawfulBasis
    risks: list[str] = Field(default_factory=list)
    mitigations: list[str] = Field(default_factory=list)
    reviewer: str | None = None
    status: Status = "draft"
    approved_by: str | None = None
    approved_at: datetime | None = None
    review_date: datetime | None = None
    fingerprint: str | None = None
    accepted_risks: list[str] = Field(default_factory=list)
    revision: int = 0

    @field_validator("approved_at", "review_date")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("times must carry a timezone")
        return v.astimezone(UTC) if v is not None else None

    @property
    def integration(self) -> str:
        return integration_id(self.department, self.type)


def integration_id(department: str, etype: str) -> str:
    return f"{department}/{etype}"


def fingerprint(config: PrivacyConfig | None, etype: str, recipients: Iterable[str]) -> str:
    """Digest of an integration as configured: its privacy declaration and its recipients."""
    tp = config.types.get(etype) if config else None
    body = json.dumps(
        {
            "type": etype,
            "privacy": tp.model_dump(mode="json") if tp else None,
            "recipients": sorted(set(recipients)),
        },
        sort_keys=True,
    )
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def submit(existing: Pia | None, new: Pia) -> Pia:
    """A (re)submitted PIA: any change of content resets approval (status ``submitted``)."""
    revision = existing.revision + 1 if existing else 1
    return new.model_copy(
        update={
            "status": "submitted",
            "approved_by": None,
            "approved_at": None,
            "fingerprint": None,
            "accepted_risks": [],
            "revision": revision,
        }
    )


class PiaError(ValueError):
    """A PIA that may not be approved (yet)."""


@dataclass(frozen=True, slots=True)
class Risk:
    """An automatically found risk: `code`, `severity` (high blocks approval), text."""

    code: str
    severity: Literal["high", "medium"]
    message: str

    def __str__(self) -> str:
        return f"[{self.severity}] {self.code}: {self.message}"


def approve(
    pia: Pia,
    reviewer: str,
    review_date: datetime,
    current_fingerprint: str,
    risks: list[Risk],
    accept: Iterable[str] = (),
    now: datetime | None = None,
    max_review_days: int = 365,
) -> Pia:
    """Approve `pia` for the integration as configured now; high risks must be accepted."""
    now = now or datetime.now(UTC)
    if pia.status not in ("submitted", "draft"):
        raise PiaError(f"a PIA in status {pia.status!r} cannot be approved; submit it again")
    if review_date <= now:
        raise PiaError("the review date must be in the future")
    if (review_date - now).days > max_review_days:
        raise PiaError(f"the review date may be at most {max_review_days} days ahead")
    accepted = set(accept)
    blocking = [r for r in risks if r.severity == "high" and r.code not in accepted]
    if blocking:
        raise PiaError(
            "high risks must be mitigated or explicitly accepted (--accept CODE): "
            + "; ".join(str(r) for r in blocking)
        )
    return pia.model_copy(
        update={
            "status": "approved",
            "reviewer": reviewer,
            "approved_by": reviewer,
            "approved_at": now,
            "review_date": review_date,
            "fingerprint": current_fingerprint,
            "accepted_risks": sorted(accepted & {r.code for r in risks}),
        }
    )


def effective_status(pia: Pia | None, current_fingerprint: str, now: float) -> str:
    """``approved``, ``missing``, ``draft`` (changed since approval), ``submitted``,
    ``rejected`` or ``expired`` (review date passed)."""
    if pia is None:
        return "missing"
    if pia.status != "approved":
        return pia.status
    if pia.fingerprint != current_fingerprint:
        return "draft"
    if pia.review_date is None or pia.review_date.timestamp() <= now:
        return "expired"
    return "approved"


def risks(
    pia: Pia,
    policy: PrivacyPolicy | None,
    subscribers: Mapping[str, Iterable[str]],
) -> list[Risk]:
    """Risky designs found automatically.

    `subscribers`: recipient department -> the purposes it subscribes to this type for.
    """
    out: list[Risk] = []
    tp = policy.type(pia.type) if policy else None
    if tp is None:
        if any(c != "public" for c in pia.fields.values()):
            out.append(
                Risk(
                    "undeclared-personal-data",
                    "high",
                    f"the PIA lists personal fields but privacy.types has no {pia.type!r}: "
                    "every recipient would get them unchanged",
                )
            )
        return out
    assert policy is not None
    identifying = set(policy.config.identifying_purposes)
    for name, cls in pia.fields.items():
        declared = tp.fields.get(name)
        if declared is None:
            out.append(Risk("field-not-declared", "high", f"{name!r} has no class in privacy"))
        elif declared != cls:
            out.append(
                Risk(
                    "class-mismatch",
                    "high",
                    f"{name!r} is {cls} in the PIA but {declared} in the config",
                )
            )
    for name in tp.fields:
        if name not in pia.fields:
            out.append(Risk("field-not-assessed", "medium", f"{name!r} is not in the PIA"))
    listed = set(pia.recipients)
    for dept, purposes in sorted(subscribers.items()):
        if dept not in listed and dept != pia.department:
            out.append(
                Risk("unlisted-recipient", "high", f"{dept} subscribes but is not in the PIA")
            )
        for purpose in sorted(set(purposes)):
            view = policy.compiled(pia.type, dept, purpose)
            assert view is not None
            if purpose not in identifying:
                for name, op in sorted(view.ops.items()):
                    if tp.fields[name] == "direct" and op[0] == "keep":
                        out.append(
                            Risk(
                                "identifier-beyond-need",
                                "high",
                                f"{dept} ({purpose}) gets direct identifier {name!r} in clear;"
                                f" purpose {purpose!r} is not one that needs identification",
                            )
                        )
                    if tp.fields[name] == "sensitive" and op[0] == "keep":
                        out.append(
                            Risk(
                                "sensitive-beyond-need",
                                "medium",
                                f"{dept} ({purpose}) gets sensitive field {name!r} in clear",
                            )
                        )
            if view.basis == "consent" and tp.subject is None:  # pragma: no cover - parse guards
                out.append(Risk("consent-no-subject", "high", "consent without a subject field"))
    if tp.lawful_basis == "consent" and pia.lawful_basis != "consent":
        out.append(
            Risk("basis-mismatch", "high", "the config processes on consent, the PIA does not")
        )
    if pia.risks and not pia.mitigations:
        out.append(Risk("no-mitigation", "medium", "risks are listed but no mitigation"))
    qi = [q for q in tp.qi() if q not in (LOCATION, TIME)]
    if len(qi) >= 3:
        out.append(
            Risk(
                "many-quasi-identifiers",
                "medium",
                f"{len(qi)} quasi-identifiers {qi}: combined they may single people out",
            )
        )
    return out


def unlisted_fields(pia: Pia, data: Mapping[str, Any] | None) -> list[str]:
    """Payload fields the PIA did not assess (an event carrying one is quarantined)."""
    if not data:
        return []
    fields = pia.fields
    return [name for name in data if name not in fields]
