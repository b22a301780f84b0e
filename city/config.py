"""The city definition: departments, jurisdiction layers, subscriptions, event types, routing.

One YAML file describes a city. `load_city(path)` validates it completely and reports every
problem as ``file: path.inside.file: what is wrong``, so the person editing the YAML finds the
line without reading our code. Layer paths are resolved relative to the YAML file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from city.cap.signature import CapConfig, load_certificates
from city.connectors import CsvMapping, MqttConfig, WebhookDelivery, check_connectors
from city.errors import ConfigError
from city.escalation import parse_escalations
from city.events import EVENT_TYPE, Priority
from city.geo import GeoConfig, parse_geo
from city.privacy import parse_privacy
from city.retention import parse_retention
from city.sharing import SharingConfig, SubscriptionSpec, parse_sharing

__all__ = ["CityConfig", "ConfigError", "load_city", "parse_city"]

SLUG = re.compile(r"^[a-z][a-z0-9-]{0,39}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LayerConfig(_Strict):
    """A GeoJSON file whose features are the zones of one jurisdiction layer."""

    path: str
    name_property: str | None = Field(
        default=None,
        description="feature property naming each zone; without it zones are named by index",
    )
    description: str = ""


class JurisdictionRef(_Strict):
    """Zones of one layer that a department answers for."""

    layer: str
    zones: list[str] | Literal["all"] = "all"


# Subscriptions: types (exact or prefix), attribute filter, scope (jurisdiction | area |
# citywide) and purpose. Defined with the policy code that compiles them.
SubscriptionConfig = SubscriptionSpec


class DepartmentConfig(_Strict):
    id: str
    name: str
    jurisdiction: list[JurisdictionRef] = Field(default_factory=list)
    subscriptions: list[SubscriptionConfig] = Field(default_factory=list)
    # Emergency acknowledgement: fallback channels and escalation chain (parsed by their
    # modules; kept raw here so the core config does not depend on them).
    fallback: list[dict[str, Any]] = Field(default_factory=list)
    escalation: dict[str, Any] | None = None
    # This department's inbox bound (overrides limits.inbox_max_len; see LimitsConfig).
    inbox_max_len: int | None = Field(default=None, ge=1000)
    # Other ways in and out (city/connectors.py): webhook push of the inbox, CSV drops.
    delivery: WebhookDelivery | None = None
    csv: list[CsvMapping] = Field(default_factory=list)

    @field_validator("id")
    @classmethod
    def _id_is_slug(cls, value: str) -> str:
        if not SLUG.match(value):
            raise ValueError("department ids are lower-case letters, digits and '-', max 40")
        return value


class EventTypeConfig(_Strict):
    """Registers a new event type or overrides a built-in one's priority."""

    priority: Priority | None = None
    fields: dict[str, str] | None = None
    description: str = ""


class RoutingConfig(_Strict):
    batch_max_events: int = Field(default=500, ge=1, le=10_000)
    batch_max_ms: int = Field(default=20, ge=1, le=10_000)
    # While the route workers are behind, a routine batch keeps gathering up to this long
    # (workers/batching.py): bigger jobs, less bookkeeping per event. At most half of
    # claim_idle_ms (held entries are pending); at or below batch_max_ms: never.
    batch_max_wait_ms: int = Field(default=250, ge=1, le=60_000)
    dedupe_window_s: int = Field(default=3600, ge=1)
    max_deliveries: int = Field(default=5, ge=1, le=100)
    claim_idle_ms: int = Field(default=30_000, ge=100)
    # The emergency lane's entries are reclaimed from a dead consumer sooner: a second
    # consumer processing a slow one's entry costs a duplicate job (delivery dedupes), while
    # waiting costs an emergency its seconds.
    emergency_claim_idle_ms: int = Field(default=5_000, ge=100)
    max_event_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)


class LimitsConfig(_Strict):
    """Bounds that keep one misbehaving party from exhausting Redis memory (docs/operations.md).

    - An inbox longer than `inbox_max_len` loses its oldest entries (every event stays in the hot
      tier and the archive); an alert goes out when it passes `inbox_alarm_ratio` of the bound,
      well before anything is trimmed, and every trimmed entry is counted.
    - When Redis's used memory passes `memory_high_ratio` of `maxmemory` (or `memory_high_mb`
      where Redis has no maxmemory), producers' routine publishes are refused with a retryable
      error until it falls below `memory_low_ratio`; emergencies are never refused.
    """

    inbox_max_len: int = Field(default=500_000, ge=1000)
    inbox_alarm_ratio: float = Field(default=0.8, gt=0, le=1)
    memory_high_ratio: float = Field(default=0.8, gt=0, lt=1)
    memory_low_ratio: float = Field(default=0.7, gt=0, lt=1)
    memory_high_mb: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _low_below_high(self) -> LimitsConfig:
        if self.memory_low_ratio >= self.memory_high_ratio:
            raise ValueError("memory_low_ratio must be below memory_high_ratio")
        return self


SHARD_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A slot group's key prefix: queues.keys.PREFIX_PATTERN's hash-tag form (city imports no queues).
SLOT_GROUP_PREFIX = re.compile(r"^\{[A-Za-z0-9_-]{1,64}\}$")


class ShardConfig(_Strict):
    """One shard of a partitioned city: where its keys are, and who lives there.

    A shard is a Redis (``url:`` / ``url_env:``) or a slot group of the one Redis Cluster the
    processes' ``REDIS_URL`` names (``prefix:``, a hash tag such as ``{seattle-a}``: every key
    of the shard is in that tag's slot). Either way the same outboxes and relays join them."""

    url: str | None = Field(default=None, description="Redis URL (redis:// or redis+sentinel://)")
    url_env: str | None = Field(default=None, description="environment variable holding the URL")
    prefix: str | None = Field(
        default=None, description="slot group on the cluster: its key prefix, a hash tag {name}"
    )
    departments: list[str] = Field(default_factory=list, description="departments at home here")

    @field_validator("url_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not ENV_NAME.match(value):
            raise ValueError("an environment variable name: letters, digits and '_'")
        return value


class PartitionsConfig(_Strict):
    """Department streams partitioned across several Redis instances (docs/operations.md).

    Each department has one home shard: its ingest streams, inbox, dedupe markers and
    acknowledgements live there; a department listed under no shard lives on `default`.
    Control data (grants, jurisdiction versions, PIAs, consent) lives on `control` (default:
    the default shard) and every shard's route workers read it there.
    """

    shards: dict[str, ShardConfig] = Field(min_length=1)
    default: str
    control: str | None = None
    relay_batch: int = Field(default=500, ge=1, le=10_000, description="entries per relay call")
    relay_marker_ttl_s: int = Field(
        default=600, ge=10, description="how long a relayed entry's marker absorbs redelivery"
    )

    @property
    def control_shard(self) -> str:
        return self.control or self.default

    @property
    def slot_groups(self) -> bool:
        """True when the shards are slot groups of one Redis Cluster (``prefix:``), not URLs."""
        return any(shard.prefix is not None for shard in self.shards.values())

    def home(self, dept: str) -> str:
        """The shard a department's streams and inbox live on."""
        for name, shard in self.shards.items():
            if dept in shard.departments:
                return name
        return self.default

    def departments_on(self, shard: str, all_departments: list[str]) -> list[str]:
        return [dept for dept in all_departments if self.home(dept) == shard]


class CityConfig(_Strict):
    city: str
    layers: dict[str, LayerConfig]
    departments: list[DepartmentConfig] = Field(min_length=1)
    event_types: dict[str, EventTypeConfig] = Field(default_factory=dict)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    sharing: SharingConfig = Field(default_factory=SharingConfig)
    geo: GeoConfig = Field(default_factory=GeoConfig)
    # CAP alerts: trusted signing certificates, require_signature (city/cap/signature.py).
    cap: CapConfig = Field(default_factory=CapConfig)
    # Sections owned by other modules, validated by their own parsers (privacy, retention).
    privacy: dict[str, Any] | None = None
    retention: dict[str, Any] | None = None
    partitions: PartitionsConfig | None = None
    mqtt: MqttConfig | None = None  # the MQTT bridge's broker and topics (city/connectors.py)

    def department(self, dept_id: str) -> DepartmentConfig:
        for dept in self.departments:
            if dept.id == dept_id:
                return dept
        raise KeyError(f"unknown department {dept_id!r}")

    @property
    def department_ids(self) -> list[str]:
        return [d.id for d in self.departments]

    def inbox_max_len(self, dept_id: str) -> int:
        """The bound of one department's inbox (its own, else the city's)."""
        own = self.department(dept_id).inbox_max_len
        return own if own is not None else self.limits.inbox_max_len


def _loc_to_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def parse_city(data: Any, source: str | Path = "<config>") -> CityConfig:
    """Validate an already-parsed YAML document; cross-references included."""
    if not isinstance(data, dict):
        raise ConfigError(
            source, [("", "the file must be a mapping (city:, layers:, departments:)")]
        )
    try:
        config = CityConfig.model_validate(data)
    except ValidationError as exc:
        problems = [(_loc_to_path(err["loc"]), err["msg"]) for err in exc.errors()]
        raise ConfigError(source, problems) from None
    problems = _cross_check(config)
    if problems:
        raise ConfigError(source, problems)
    parse_sharing(data.get("sharing"), source, config.department_ids)
    parse_geo(data.get("geo"), config, str(source))
    parse_privacy(data.get("privacy"), source, config.department_ids)
    parse_escalations({d.id: d.escalation for d in config.departments}, source)
    if data.get("retention") is not None:
        parse_retention(data["retention"], str(source))
    return config


def _cross_check(config: CityConfig) -> list[tuple[str, str]]:
    from city.cap import CAP_TYPES
    from city.schemas import BUILTIN_TYPES, model_from_fields

    problems: list[tuple[str, str]] = []
    known_types = set(BUILTIN_TYPES) | set(CAP_TYPES)  # CAP alerts' types (city/cap/model.py)
    for name, spec in config.event_types.items():
        where = f"event_types.{name}"
        if not EVENT_TYPE.match(name):
            problems.append((where, "event type must be dotted lower-case words"))
        if name not in BUILTIN_TYPES and spec.fields is None:
            problems.append((where, "a new event type needs `fields:` (its payload schema)"))
        if name not in BUILTIN_TYPES and spec.priority is None:
            problems.append((where, "a new event type needs a `priority:`"))
        if spec.fields is not None:
            try:
                model_from_fields(name, spec.fields)
            except ValueError as exc:
                problems.append((f"{where}.fields", str(exc)))
        known_types.add(name)
    seen_depts: set[str] = set()
    seen_subs: set[str] = set()
    for i, dept in enumerate(config.departments):
        where = f"departments[{i}]"
        if dept.id in seen_depts:
            problems.append((f"{where}.id", f"duplicate department id {dept.id!r}"))
        seen_depts.add(dept.id)
        for j, ref in enumerate(dept.jurisdiction):
            if ref.layer not in config.layers:
                problems.append(
                    (f"{where}.jurisdiction[{j}].layer", f"no layer named {ref.layer!r} in layers:")
                )
        for j, sub in enumerate(dept.subscriptions):
            swhere = f"{where}.subscriptions[{j}]"
            if sub.id in seen_subs:
                problems.append((f"{swhere}.id", f"duplicate subscription id {sub.id!r}"))
            seen_subs.add(sub.id)
            for k, area in enumerate(sub.area or []):
                if area.layer not in config.layers:
                    problems.append(
                        (f"{swhere}.area[{k}].layer", f"no layer named {area.layer!r} in layers:")
                    )
            if sub.scope == "jurisdiction" and not dept.jurisdiction:
                problems.append(
                    (f"{swhere}.scope", "scope 'jurisdiction' needs the department to have one")
                )
            for pattern in sub.types:
                if not _pattern_matches_any(pattern, known_types):
                    problems.append((f"{swhere}.types", f"{pattern!r} matches no known event type"))
    if config.partitions is not None:
        problems.extend(_check_partitions(config.partitions, seen_depts))
    connectors = {d.id: (d.delivery, d.csv) for d in config.departments}
    problems.extend(check_connectors(connectors, config.mqtt, known_types))
    return problems


def _check_partitions(parts: PartitionsConfig, departments: set[str]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for field_name in ("default", "control"):
        name = getattr(parts, field_name)
        if name is not None and name not in parts.shards:
            problems.append((f"partitions.{field_name}", f"no shard named {name!r} in shards:"))
    homes: dict[str, str] = {}
    prefixes: dict[str, str] = {}
    for name, shard in parts.shards.items():
        where = f"partitions.shards.{name}"
        if not SHARD_NAME.match(name):
            problems.append((where, "shard names are lower-case letters, digits and '-', max 32"))
        given = [shard.url, shard.url_env, shard.prefix]
        if sum(value is not None for value in given) != 1:
            problems.append((where, "give exactly one of `url:`, `url_env:` or `prefix:`"))
        elif parts.slot_groups and shard.prefix is None:
            problems.append(
                (where, "shards are all slot groups (`prefix:`) of one cluster, or all URLs")
            )
        elif shard.prefix is not None and not SLOT_GROUP_PREFIX.match(shard.prefix):
            problems.append(
                (where, f"prefix {shard.prefix!r}: a hash tag, 1-64 letters, digits, '_' or '-' "
                 "in braces ({seattle-a})")
            )  # fmt: skip
        elif shard.prefix is not None and shard.prefix in prefixes:
            problems.append(
                (where, f"prefix {shard.prefix!r} is shard {prefixes[shard.prefix]!r}'s")
            )
        if shard.prefix is not None:
            prefixes.setdefault(shard.prefix, name)
        for j, dept in enumerate(shard.departments):
            if dept not in departments:
                problems.append((f"{where}.departments[{j}]", f"no department {dept!r}"))
            elif dept in homes:
                problems.append(
                    (f"{where}.departments[{j}]", f"{dept!r} is already at home on {homes[dept]!r}")
                )
            else:
                homes[dept] = name
    return problems


def _pattern_matches_any(pattern: str, types: set[str]) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        prefix = pattern[:-1]
        return any(t.startswith(prefix) for t in types)
    return pattern in types


def load_city(path: str | Path) -> tuple[CityConfig, Path]:
    """Load and validate a city YAML file; returns the config and the folder paths resolve to."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(file, [("", f"cannot read: {exc.strerror or exc}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(file, [(where, f"not valid YAML: {exc}")]) from None
    config = parse_city(data, file)
    base_dir = file.parent.resolve()
    _resolve_cap_certificates(config, base_dir, file)
    return config, base_dir


def _resolve_cap_certificates(config: CityConfig, base_dir: Path, source: Path) -> None:
    """Check every ``cap.trusted_certificates`` file now (a ConfigError naming the entry) and
    make the paths absolute, so whoever loads them later does not depend on the folder."""
    paths = config.cap.trusted_certificates
    load_certificates(paths, base_dir, source)
    config.cap.trusted_certificates = [str(base_dir / path) for path in paths]
