"""Privacy: field classes, per-recipient views, keyed pseudonyms, consent rules, precedence.

The city's privacy officer declares, per event type, which data fields are personal (the
``privacy:`` section of the city config). From that declaration each (event type, recipient,
purpose) gets one compiled *view*: a plan of keep / drop / redact / mask / keyed pseudonym per
data field, plus generalisation of the location (a coarser H3 cell) and of the time (a bucket).
Plans are compiled once per config version and cached, so an event costs a dict walk and, at
most, one HMAC per pseudonymised field.

Pseudonyms are HMAC-SHA256 under a key per (domain, period): stable inside a period (so a
department can join its own data), different across periods and domains, and severed for good
when the period's key is deleted. A plain hash is never used: over a small identifier space
(plates, phone numbers) it is reversed by enumeration. Keys live in a secrets file or an
environment variable, never in code (`KeyRing`).

Views only ever remove or coarsen what the sharing policy (`city.sharing.view`) already let
through: privacy cannot re-add a field a policy removed. The precedence between transparency
and protection is written down once, in `PRECEDENCE`, and applied by `erasure_decision`,
`consent_applies` and the open-data release (`city.opendata`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

import h3
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from city.errors import ConfigError
from city.events import EVENT_TYPE
from city.patterns import type_matcher
from city.sharing import Decision
from city.sharing import view as policy_view

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
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

PRECEDENCE: tuple[str, ...] = (
    "1. A legal obligation (or legal retention) beats erasure and consent withdrawal: such "
    "records stay and keep flowing to the recipients the law names.",
    "2. A sharing forbid beats a privacy 'keep': privacy only removes or coarsens.",
    "3. Consent gates only processing whose lawful basis is consent; break-glass (vital "
    "interests) is not gated by consent but still gets the recipient's transforms.",
    "4. The public sees personal data only as aggregates (k-suppressed, optionally noised) "
    "or as k-anonymous records without direct identifiers or sensitive fields.",
    "5. Audit and consent records hold pseudonyms and key ids, never raw identifiers.",
)


def parse_duration(text: str) -> int:
    """``15m`` -> 900 seconds (s, m, h, d)."""
    match = _DURATION.match(str(text).strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{text!r}: use a positive number and s/m/h/d, e.g. 15m or 1h")
    return int(match.group(1)) * _UNITS[match.group(2)]


# --------------------------------------------------------------------------------------------
# Configuration: the `privacy:` section
# --------------------------------------------------------------------------------------------


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


Op = tuple[str, Any]  # (name, argument)


def parse_transform(spec: Any) -> Op:
    """A transform spec from the config -> (op, argument); ValueError if malformed."""
    if isinstance(spec, str):
        if spec in ("keep", "drop", "redact"):
            return (spec, None)
        if spec == "mask":
            return ("mask", 2)
        if spec == "pseudonym":
            return ("pseudonym", None)
        raise ValueError(f"unknown transform {spec!r}")
    if isinstance(spec, dict) and len(spec) == 1:
        ((name, arg),) = spec.items()
        if name == "mask" and isinstance(arg, int) and not isinstance(arg, bool) and 0 <= arg <= 8:
            return ("mask", arg)
        if name == "pseudonym" and isinstance(arg, str) and re.match(r"^[a-z][a-z0-9_-]*$", arg):
            return ("pseudonym", arg)
        if name == "h3" and isinstance(arg, int) and not isinstance(arg, bool) and 0 <= arg <= 15:
            return ("h3", arg)
        if name == "bucket" and isinstance(arg, str):
            return ("bucket", parse_duration(arg))
        raise ValueError(f"bad argument for {name!r}: {arg!r}")
    raise ValueError(
        "a transform is keep, drop, redact, mask, pseudonym or one of "
        "{mask: N}, {pseudonym: domain}, {h3: resolution}, {bucket: 15m}"
    )


# --------------------------------------------------------------------------------------------
# Keys and pseudonyms
# --------------------------------------------------------------------------------------------


class KeyError_(LookupError):
    """No key for a (domain, period): the pseudonym cannot be made (the field is dropped)."""


def period_of(time_text: str, period: str) -> str:
    """The key period an event time (RFC 3339) falls in: 2026-11-25, 2026-W48, 2026-11..."""
    if period == "month":
        return time_text[:7]
    if period == "year":
        return time_text[:4]
    if period == "day":
        return time_text[:10]
    day = datetime.fromisoformat(time_text[:10])
    if period == "week":
        iso = day.isocalendar()
        return f"{iso.year}-W{iso.week:02d}"
    return f"{day.year}-Q{(day.month - 1) // 3 + 1}"


class KeyRing:
    """HMAC keys per (domain, period) and the consent key, loaded from a secrets file.

    File format (JSON, mode 0600)::

        {"consent": "<base64 32 bytes>",
         "domains": {"sdot": {"2026-11": "<base64>", "2026-12": "<base64>"}}}

    Key ids are ``domain/period/fingerprint`` (first 8 hex of SHA-256 of the key), so a
    recipient knows which period a pseudonym belongs to, and a replaced key is told apart.
    """

    def __init__(self, domains: Mapping[str, Mapping[str, bytes]], consent: bytes | None = None):
        self.domains = {d: dict(p) for d, p in domains.items()}
        self.consent = consent
        self._ids: dict[tuple[str, str], str] = {}
        self._signers: dict[tuple[str, str], Signer | None] = {}
        self.source: Path | None = None  # the file it was loaded from

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], where: str = "<keys>") -> KeyRing:
        if not isinstance(doc, dict):
            raise ValueError(f"{where}: keys file must be a JSON object")
        try:
            domains = {
                d: {p: _b64(k) for p, k in periods.items()}
                for d, periods in (doc.get("domains") or {}).items()
            }
            consent = _b64(doc["consent"]) if doc.get("consent") else None
        except (AttributeError, ValueError, TypeError) as exc:
            raise ValueError(f"{where}: malformed keys file ({exc})") from None
        return cls(domains, consent)

    @staticmethod
    def path(config: KeysConfig, base_dir: Path | None = None) -> Path | None:
        """The secrets file: `config.file` (relative to `base_dir`), else `$config.env`."""
        name = config.file or os.environ.get(config.env)
        if not name:
            return None
        path = Path(name)
        if not path.is_absolute() and base_dir is not None and config.file:
            path = base_dir / path
        return path

    @classmethod
    def load(cls, config: KeysConfig, base_dir: Path | None = None) -> KeyRing:
        """The keys of the secrets file (none when no file is configured)."""
        path = cls.path(config, base_dir)
        return cls({}) if path is None else cls.load_file(path)

    @classmethod
    def load_file(cls, path: Path) -> KeyRing:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read privacy keys ({exc})") from None
        ring = cls.from_json(doc, str(path))
        ring.source = path
        return ring

    def key(self, domain: str, period: str) -> bytes:
        try:
            return self.domains[domain][period]
        except KeyError:
            raise KeyError_(f"no pseudonym key for domain {domain!r}, period {period!r}") from None

    def key_id(self, domain: str, period: str) -> str:
        found = self._ids.get((domain, period))
        if found is None:
            digest = hashlib.sha256(self.key(domain, period)).hexdigest()[:8]
            found = self._ids[(domain, period)] = f"{domain}/{period}/{digest}"
        return found

    def signer(self, domain: str, period: str) -> Signer | None:
        """The prepared HMAC for (domain, period); None when there is no such key."""
        found = self._signers.get((domain, period), _UNSET)
        if found is _UNSET:
            try:
                found = Signer(self.key(domain, period), self.key_id(domain, period))
            except KeyError_:
                found = None
            self._signers[(domain, period)] = found
        return found  # type: ignore[return-value]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "domains": {
                d: {p: base64.b64encode(k).decode() for p, k in sorted(periods.items())}
                for d, periods in sorted(self.domains.items())
            }
        }
        if self.consent is not None:
            out["consent"] = base64.b64encode(self.consent).decode()
        return out

    def ensure(self, domains: Iterable[str], periods: Iterable[str]) -> list[str]:
        """Create missing keys (os.urandom, 32 bytes); returns the key ids created."""
        created = []
        if self.consent is None:
            self.consent = os.urandom(32)
            created.append("consent")
        for period in periods:
            for domain in domains:
                if period not in self.domains.setdefault(domain, {}):
                    self.domains[domain][period] = os.urandom(32)
                    created.append(self.key_id(domain, period))
                    self._signers.pop((domain, period), None)
        return created

    def drop_period(self, period: str) -> int:
        """Delete every domain's key for `period`: its pseudonyms can never be linked again."""
        count = 0
        for periods in self.domains.values():
            if periods.pop(period, None) is not None:
                count += 1
        self._ids = {k: v for k, v in self._ids.items() if k[1] != period}
        self._signers = {k: v for k, v in self._signers.items() if k[1] != period}
        return count


def _b64(text: str) -> bytes:
    key = base64.b64decode(text, validate=True)
    if len(key) < 16:
        raise ValueError("keys must be at least 16 bytes")
    return key


_UNSET: Any = object()
_STRIP = str.maketrans("", "", " \t\r\n-")


def normalise_subject(value: Any) -> str:
    """One spelling per citizen identifier: no spaces or hyphens, upper case."""
    return str(value).translate(_STRIP).upper()


class Signer:
    """HMAC-SHA256 under one key, with the padded key states hashed once (RFC 2104).

    Copying the two prepared SHA-256 states costs a fraction of `hmac.digest`, which
    re-derives them on every call; the output is the same HMAC.
    """

    __slots__ = ("_inner", "_outer", "kid")

    def __init__(self, key: bytes, kid: str = ""):
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        block = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
        self.kid = kid

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def pseudonym(self, value: Any) -> str:
        return self.digest(normalise_subject(value).encode())[:16].hex()


def pseudonym(key: bytes, value: Any) -> str:
    """Keyed pseudonym: HMAC-SHA256 of the normalised identifier, 128 bits as 32 hex.

    Normalised (`normalise_subject`) so that ``KXT-4410`` and ``kxt 4410`` join."""
    return hmac.digest(key, normalise_subject(value).encode(), "sha256")[:16].hex()


def consent_id(key: bytes, kind: str, value: Any) -> str:
    """The citizen's pseudonym in the consent registry (stable: consent outlives periods)."""
    return (
        "c" + hmac.digest(key, f"{kind}:{normalise_subject(value)}".encode(), "sha256")[:16].hex()
    )


# --------------------------------------------------------------------------------------------
# Compiled views
# --------------------------------------------------------------------------------------------

REDACTED = "[redacted]"


def _mask(value: Any, keep: int) -> str:
    text = str(value)
    shown = text[-keep:] if keep else ""
    return "*" * (len(text) - len(shown)) + shown


def _point(location: Any) -> tuple[float, float] | None:
    if not isinstance(location, dict):
        return None
    if "lat" in location:
        return float(location["lat"]), float(location["lon"])
    if location.get("type") == "Point":
        lon, lat = location["coordinates"][:2]
        return float(lat), float(lon)
    from shapely.geometry import shape  # only for lines and areas

    c = shape(location).centroid
    return float(c.y), float(c.x)


def generalise_location(event: Mapping[str, Any], resolution: int) -> str | None:
    """The event's H3 cell at `resolution` (from its finer `h3cell` when it has one)."""
    cell = event.get("h3cell")
    if isinstance(cell, str) and h3.is_valid_cell(cell):
        res = h3.get_resolution(cell)
        if res >= resolution:
            return h3.cell_to_parent(cell, resolution) if res > resolution else cell
    point = _point(event.get("location"))
    return None if point is None else h3.latlng_to_cell(point[0], point[1], resolution)


_BUCKETS: dict[tuple[str, int], str] = {}


CACHE_MAX = 200_000  # entries per memo (cell centres, time buckets) before it is cleared
_CENTRES: dict[str, tuple[float, float]] = {}


def cell_centre(cell: str) -> dict[str, float]:
    """The centre of an H3 cell as a location point (cached: few cells, many events)."""
    found = _CENTRES.get(cell)
    if found is None:
        if len(_CENTRES) > CACHE_MAX:
            _CENTRES.clear()
        lat, lon = h3.cell_to_latlng(cell)
        found = _CENTRES[cell] = (round(lat, 6), round(lon, 6))
    return {"lat": found[0], "lon": found[1]}


def bucket_time(time_text: str, seconds: int) -> str:
    """Floor an RFC 3339 time to a bucket of `seconds` (UTC, ``Z``).

    Buckets of whole minutes depend only on the minute, so canonical UTC times
    (``2026-11-25T10:07:31Z``) are looked up by their minute prefix.
    """
    canonical = seconds % 60 == 0 and time_text.endswith("Z") and time_text[16:17] == ":"
    if canonical:
        found = _BUCKETS.get((time_text[:16], seconds))
        if found is not None:
            return found
    when = datetime.fromisoformat(time_text.replace("Z", "+00:00"))
    epoch = int(when.timestamp()) // seconds * seconds
    out = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if canonical:
        if len(_BUCKETS) > CACHE_MAX:
            _BUCKETS.clear()
        _BUCKETS[(time_text[:16], seconds)] = out
    return out


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


class PrivacyPolicy:
    """The compiled ``privacy:`` section: views per (type, recipient, purpose), cached."""

    def __init__(self, config: PrivacyConfig, keys: KeyRing | None = None):
        self.config = config
        self.keys = keys or KeyRing({})
        self.version = config.version()
        specs: dict[str, Any] = dict(DEFAULT_CLASS_TRANSFORMS)
        specs.update(config.class_defaults)
        self.defaults = {cls: parse_transform(spec) for cls, spec in specs.items()}
        self._views: dict[tuple[str, str, str], CompiledView | None] = {}
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
        selected = policy_view(event, decision)
        if decision.reason == "own-data":  # the producer already holds its data
            return selected, _OWN
        compiled = self.compiled(event["type"], dept, decision.purpose)
        if compiled is None:
            return selected, _NONE
        state = "n/a"
        strip = False
        if consent_applies(compiled.basis, decision.break_glass):
            state = consent
            if consent != "given":
                if compiled.without_consent == "withhold":
                    return None, Note(compiled.id, compiled.basis, state, "withhold")
                strip = True
        out, used = compiled.apply(selected, self.keys, strip)
        out["privacy"] = compiled.id
        if not used and not strip and state == "n/a":
            return out, compiled.note
        return out, Note(compiled.id, compiled.basis, state, "strip" if strip else "view", used)


def consent_applies(basis: str, break_glass: bool = False) -> bool:
    """Consent gates only consent-based processing; break-glass is vital interests."""
    return basis == "consent" and not break_glass


def erasure_decision(tp: TypePrivacy | None, legal_hold: bool = False) -> tuple[str, str]:
    """Whether a citizen's erasure request may delete this type's records (precedence 1)."""
    if legal_hold:
        return "retain", "a legal hold applies: legal retention beats erasure"
    if tp is not None and tp.lawful_basis == "legal_obligation":
        return "retain", "processed under a legal obligation: legal retention beats erasure"
    return "erase", "no legal ground to retain: erase on request"
