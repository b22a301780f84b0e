"""What a worker process loads once and every job reuses: the router, the keys, the scripts.

Loading the city (GeoJSON layers, prepared geometry, compiled subscriptions) takes far longer
than routing a batch, so it happens once per process, not once per job. A worker sets the
context at start-up (`set_context`); a job run elsewhere (tests, `rq` run by hand) builds it
lazily from ``CITYRELAY_CONFIG`` / ``CITYRELAY_PREFIX`` / ``REDIS_URL``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis

from city.config import CityConfig, load_city
from city.geo import Jurisdictions
from city.routing import Delivery, Routed, Router
from city.sharing import Authorizer, GrantSet
from jobs.privacy_stage import PrivacyStage
from queues.audit import AuditLog
from queues.connect import redis_from_url
from queues.grants import GrantStore
from queues.inbox import Deliverer
from queues.jurisdictions import JurisdictionStore, JurisdictionWatcher
from queues.keys import Keys
from queues.limits import InboxAlarms, inbox_bounds
from queues.partition import PartitionError, Placement, group_keys, local_shard, shard_url


@dataclass
class RouteContext:
    config: CityConfig
    router: Router
    keys: Keys
    redis_url: str = "redis://127.0.0.1:6379/0"
    base_dir: Path | None = None  # the city YAML's folder (privacy key files resolve there)
    # Partitioned city: the shard this process routes on (default: $CITYRELAY_SHARD), where
    # each recipient's inbox goes from here, and the client of the control shard.
    shard: str | None = None
    placement: Placement = field(init=False)
    control_keys: Keys = field(init=False)  # control data's keys: `keys` but in slot groups
    control: Redis | None = None
    _deliverers: dict[int, Deliverer] = field(default_factory=dict)
    _audits: dict[int, AuditLog] = field(default_factory=dict)
    _via_cache: dict[tuple[object, ...], str] = field(default_factory=dict)
    _grants: GrantSet | None = None
    _authorizer: Authorizer | None = None
    _watchers: dict[int, JurisdictionWatcher] = field(default_factory=dict)
    _inbox_alarms: InboxAlarms | None = None

    def __post_init__(self) -> None:
        parts = self.config.partitions
        if parts is not None and self.shard is None:
            self.shard = local_shard(self.config, prefix=self.keys.prefix)
        if parts is not None and self.shard not in parts.shards:
            raise PartitionError(f"no shard named {self.shard!r} ({', '.join(parts.shards)})")
        groups = group_keys(parts)
        if groups and groups[str(self.shard)] != self.keys:
            raise PartitionError(
                f"shard {self.shard!r} is slot group {groups[str(self.shard)].prefix}, "
                f"not {self.keys.prefix!r}"
            )
        self.placement = Placement(self.keys, parts, self.shard, shard_keys=groups)
        # Slot groups keep control data under the control group's prefix, on the same cluster.
        self.control_keys = groups.get(parts.control_shard, self.keys) if parts else self.keys

    def control_redis(self, redis: Redis) -> Redis:
        """Where grants, jurisdiction versions, PIAs and consent are read (and the PIA gate's
        quarantine written), under `control_keys`: this shard's Redis, unless the city is
        partitioned and another shard is the control shard (a slot group of the same cluster:
        the same client)."""
        parts = self.config.partitions
        if parts is None or parts.control_shard == self.shard or parts.slot_groups:
            return redis
        if self.control is None:
            self.control = Redis.from_url(shard_url(parts, parts.control_shard))
        return self.control

    @classmethod
    def load(
        cls, config_path: str | Path, keys: Keys, redis_url: str | None = None
    ) -> RouteContext:
        config, base_dir = load_city(config_path)
        router = Router.from_config(config, base_dir)
        router.jurisdictions.prepare()  # build the indexes now, not inside the first batch
        return cls(
            config=config,
            router=router,
            keys=keys,
            redis_url=redis_url or os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            base_dir=base_dir,
        )

    def audit(self, redis: Redis) -> AuditLog:
        found = self._audits.get(id(redis))
        if found is None:
            found = self._audits[id(redis)] = AuditLog(redis, self.keys)
        return found

    def state(self, redis: Redis) -> tuple[Authorizer, int | str, Jurisdictions]:
        """The grants and jurisdiction versions in force (on `control_redis`, under
        `control_keys`): one MGET per batch; grants and layers are reloaded only when their
        version counters moved."""
        keys = self.control_keys
        raw_grants, raw_generation = redis.mget(keys.grants_version, keys.juris_generation)
        grants = GrantStore(redis, keys).load(self._grants, int(raw_grants or 0))
        if grants is not self._grants or self._authorizer is None:
            self._grants = grants
            self._authorizer = self.router.authorizer(grants)
        watcher = self._watchers.get(id(redis))
        if watcher is None:
            store = JurisdictionStore(redis, keys)
            watcher = JurisdictionWatcher(store, self.router.jurisdictions)
            self._watchers[id(redis)] = watcher
        world = watcher.current(int(raw_generation or 0))
        return self._authorizer, grants.version, world

    def via_json(self, delivery: Delivery, where: WhereKey) -> str:
        """The delivery's explanation as JSON; few distinct ones exist, so they are cached.

        `where` is `where_key(routed)`: the jurisdiction versions used and boundary ties.
        """
        d = delivery.decision
        versions, ties = where
        signature = (
            where,
            delivery.dept,
            tuple(delivery.subscriptions),
            tuple(delivery.zones),
            delivery.citywide,
            d.reason,
            d.policy,
            d.grant,
            delivery.purpose,
        )
        found = self._via_cache.get(signature)
        if found is None:
            if len(self._via_cache) > 50_000:
                self._via_cache.clear()
            explained = delivery.explain()
            explained["versions"] = dict(versions)
            if ties:
                explained["boundary"] = {layer: list(names) for layer, names in ties}
            found = json.dumps(explained, separators=(",", ":"))
            self._via_cache[signature] = found
        return found

    @property
    def privacy(self) -> PrivacyStage:
        """The privacy stage for this config (views, consent, PIA gate; a no-op without one).
        Everything it reads and writes is control data (on `control_redis`)."""
        return PrivacyStage.for_config(self.config, self.control_keys, self.base_dir)

    def redis(self) -> Redis:
        return redis_from_url(self.redis_url)

    def deliverer(self, redis: Redis) -> Deliverer:
        found = self._deliverers.get(id(redis))
        if found is None:
            bounds = inbox_bounds(self.keys, self.config)
            found = Deliverer(
                redis, self.config.routing.dedupe_window_s, bounds, stats_key=self.keys.stats
            )
            self._deliverers[id(redis)] = found
        return found

    @property
    def inbox_alarms(self) -> InboxAlarms:
        if self._inbox_alarms is None:
            self._inbox_alarms = InboxAlarms(self.keys)
        return self._inbox_alarms


WhereKey = tuple[tuple[tuple[str, int], ...], tuple[tuple[str, tuple[str, ...]], ...]]


def where_key(routed: Routed) -> WhereKey:
    """Hashable (versions, ties) of where an event was found."""
    where = routed.where
    if where is None:
        return (), ()
    ties = tuple(sorted(where.ties.items())) if where.ties else ()
    return tuple(sorted(where.versions.items())), ties


_contexts: dict[str, RouteContext] = {}


def set_context(context: RouteContext) -> None:
    _contexts[context.keys.prefix] = context


def get_context(prefix: str | None = None) -> RouteContext:
    keys = Keys(prefix) if prefix else Keys.from_env()
    found = _contexts.get(keys.prefix)
    if found is None:
        path = os.environ.get("CITYRELAY_CONFIG")
        if not path:
            raise RuntimeError(
                f"no route context for prefix {keys.prefix!r}: start workers with --config "
                "or set CITYRELAY_CONFIG"
            )
        found = RouteContext.load(path, keys)
        set_context(found)
    return found
