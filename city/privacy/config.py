"""The ``privacy:`` section of the city config: field classes, view rules, keys, PIA, open data.

The city's privacy officer declares, per event type, which data fields are personal. These
pydantic models are that declaration; `parse_privacy` validates it and reports every problem
as ``privacy.types.traffic.incident.views[0].transforms.plate: ...``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from city.errors import ConfigError
from city.events import EVENT_TYPE
from city.patterns import type_matcher
from city.privacy.transforms import parse_duration, parse_transform

FieldClass = Literal["direct", "quasi", "sensitive", "public"]
LawfulBasis = Literal[
    "consent",
    "contract",
    "legal_obligation",
    "vital_interests",
    "public_task",
    "legitimate_interests",
]
Period = Literal["day", "week", "month", "quarter", "year"]
PERSONAL: frozenset[str] = frozenset({"direct", "quasi", "sensitive"})
# The two attributes a view may generalise besides the data fields.
LOCATION, TIME = "location", "time"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ViewRule(_Strict):
    """Transforms for the recipients and purposes it names (first matching rule wins).

    `transforms`: field (or ``location`` / ``time``) -> ``keep`` | ``drop`` | ``redact`` |
    ``mask`` | ``pseudonym`` | ``{mask: N}`` (keep the last N characters) |
    ``{pseudonym: domain}`` | ``{h3: resolution}`` (location) | ``{bucket: 15m}`` (time).
    Fields not named follow the class defaults. `lawful_basis` overrides the type's.
    """

    recipients: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    purposes: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    transforms: dict[str, Any] = Field(default_factory=dict)
    lawful_basis: LawfulBasis | None = None
    without_consent: Literal["strip", "withhold"] | None = None


class TypePrivacy(_Strict):
    """What is personal in one event type and how each recipient sees it."""

    fields: dict[str, FieldClass]
    location: FieldClass = "quasi"
    time: FieldClass = "public"
    subject: str | None = Field(
        default=None, description="data field identifying the citizen (consent lookups)"
    )
    subject_kind: str | None = Field(default=None, description="e.g. plate, phone")
    lawful_basis: LawfulBasis = "public_task"
    without_consent: Literal["strip", "withhold"] = "strip"
    views: list[ViewRule] = Field(default_factory=list)
    quasi_identifiers: list[str] | None = Field(
        default=None, description="for record-level open data; default: quasi fields + location"
    )

    def classes(self) -> dict[str, str]:
        return {**self.fields, LOCATION: self.location, TIME: self.time}

    def qi(self) -> list[str]:
        if self.quasi_identifiers is not None:
            return list(self.quasi_identifiers)
        return [f for f, c in self.classes().items() if c == "quasi"]


class KeysConfig(_Strict):
    """Where the HMAC keys are: a JSON secrets file, or an env var naming one."""

    file: str | None = None
    env: str = "CITYRELAY_PRIVACY_KEYS"


class ControllerConfig(_Strict):
    """The data controller named on consent receipts."""

    name: str = "City"
    contact: str = ""
    email: str = ""
    policy_url: str = ""
    jurisdiction: str = ""


class PiaSettings(_Strict):
    required: bool = True
    exempt_types: list[str] = Field(default_factory=list)
    max_review_days: int = Field(default=365, ge=1, le=3 * 365)


class OpenDataConfig(_Strict):
    k: int = Field(default=10, ge=2, le=10_000)
    resolution: int = Field(default=9, ge=0, le=15)
    min_resolution: int = Field(default=5, ge=0, le=15)
    bucket: str = "1h"
    epsilon: float | None = Field(default=None, gt=0, le=10)

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, v: str) -> str:
        parse_duration(v)
        return v


class PrivacyConfig(_Strict):
    """The ``privacy:`` section of the city config."""

    types: dict[str, TypePrivacy] = Field(default_factory=dict)
    keys: KeysConfig = Field(default_factory=KeysConfig)
    pseudonym_period: Period = "month"
    class_defaults: dict[str, Any] = Field(default_factory=dict)
    identifying_purposes: list[str] = Field(
        default_factory=lambda: ["investigation", "emergency-response", "public-safety"]
    )
    consent_days: int = Field(default=365, ge=1, le=10 * 365)
    controller: ControllerConfig = Field(default_factory=ControllerConfig)
    pia: PiaSettings = Field(default_factory=PiaSettings)
    opendata: OpenDataConfig = Field(default_factory=OpenDataConfig)

    def version(self) -> str:
        body = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    def pia_required(self, etype: str) -> bool:
        return self.pia.required and not (
            self.pia.exempt_types and type_matcher(self.pia.exempt_types)(etype)
        )


DEFAULT_CLASS_TRANSFORMS: dict[str, Any] = {
    "direct": "drop",
    "sensitive": "drop",
    "quasi": "keep",
    "public": "keep",
}


def _loc(loc: tuple[Any, ...]) -> str:
    out = "privacy"
    for item in loc:
        out += f"[{item}]" if isinstance(item, int) else f".{item}"
    return out


def parse_privacy(
    raw: Any, source: str | Path = "<config>", departments: Iterable[str] | None = None
) -> PrivacyConfig | None:
    """Validate a ``privacy:`` mapping (None: no privacy section, everything passes unchanged).

    Reports every problem as ``privacy.types.traffic.incident.views[0].transforms.plate: ...``.
    """
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(source, [("privacy", "must be a mapping (types:, keys:, ...)")])
    try:
        config = PrivacyConfig.model_validate(raw)
    except ValidationError as exc:
        errors = [(_loc(e["loc"]), e["msg"].removeprefix("Value error, ")) for e in exc.errors()]
        raise ConfigError(source, errors) from None
    problems: list[tuple[str, str]] = []
    known = set(departments) if departments is not None else None
    for cls, spec in config.class_defaults.items():
        if cls not in DEFAULT_CLASS_TRANSFORMS:
            problems.append((f"privacy.class_defaults.{cls}", f"no field class {cls!r}"))
            continue
        try:
            op = parse_transform(spec)
            if op[0] in ("h3", "bucket"):
                raise ValueError("class defaults apply to data fields: no h3/bucket")
        except ValueError as exc:
            problems.append((f"privacy.class_defaults.{cls}", str(exc)))
    od = config.opendata
    if od.min_resolution > od.resolution:
        problems.append(("privacy.opendata.min_resolution", "must not exceed resolution"))
    for etype, tp in config.types.items():
        where = f"privacy.types.{etype}"
        if not EVENT_TYPE.match(etype):
            problems.append((where, "event type must be dotted lower-case words"))
        if tp.subject is not None and tp.subject not in tp.fields:
            problems.append((f"{where}.subject", f"{tp.subject!r} is not one of the fields"))
        for name in tp.qi():
            if name not in tp.classes():
                problems.append((f"{where}.quasi_identifiers", f"unknown field {name!r}"))
        bases = {tp.lawful_basis} | {v.lawful_basis for v in tp.views if v.lawful_basis}
        if "consent" in bases and tp.subject is None:
            problems.append((f"{where}.subject", "consent-based processing needs a `subject`"))
        for i, rule in enumerate(tp.views):
            rwhere = f"{where}.views[{i}]"
            if known is not None:
                for r in rule.recipients:
                    if r != "*" and r not in known:
                        problems.append((f"{rwhere}.recipients", f"no department {r!r}"))
            for name, spec in rule.transforms.items():
                twhere = f"{rwhere}.transforms.{name}"
                try:
                    op = parse_transform(spec)
                except ValueError as exc:
                    problems.append((twhere, str(exc)))
                    continue
                if name not in tp.classes():
                    problems.append((twhere, f"no field {name!r} declared for {etype}"))
                elif name == LOCATION and op[0] not in ("keep", "drop", "h3"):
                    problems.append((twhere, "location takes keep, drop or {h3: resolution}"))
                elif name == TIME and op[0] not in ("keep", "bucket"):
                    problems.append((twhere, "time takes keep or {bucket: 15m}"))
                elif name not in (LOCATION, TIME) and op[0] in ("h3", "bucket"):
                    problems.append((twhere, f"{op[0]} applies to location/time only"))
    if problems:
        raise ConfigError(source, problems)
    return config
