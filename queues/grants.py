"""Grants in Redis: create, revoke (with the delegation cascade), list, and a cheap reload.

Grants live in one hash (id -> JSON) next to a version counter bumped in the same
transaction as every change. A router calls `GrantStore.load(previous)` once per batch: one
GET, and the previous compiled `GrantSet` is reused unless the version moved. Expiry needs no
job: decisions compare the batch time with each grant's validity.
Every change is written to the audit chain in the same transaction.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from redis import Redis

from city.sharing import Grant, GrantError, GrantSet, check_new_grant, descendants
from queues.audit import AuditLog
from queues.keys import Keys


class GrantStore:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        audit: AuditLog | None = None,
        break_glass_max_minutes: int = 240,
    ):
        self.redis = redis
        self.keys = keys
        self.audit = audit or AuditLog(redis, keys)
        self.break_glass_max_minutes = break_glass_max_minutes

    def all(self) -> dict[str, Grant]:
        raw = self.redis.hgetall(self.keys.grants)
        grants = (Grant.model_validate_json(v) for v in raw.values())
        return {g.id: g for g in grants}

    def get(self, grant_id: str) -> Grant:
        raw = self.redis.hget(self.keys.grants, grant_id)
        if raw is None:
            raise GrantError(f"no grant {grant_id}")
        return Grant.model_validate_json(raw)

    def version(self) -> int:
        return int(self.redis.get(self.keys.grants_version) or 0)

    def load(self, previous: GrantSet | None = None, version: int | None = None) -> GrantSet:
        """The compiled grant set; `previous` again when nothing changed since it was loaded.

        `version`: the current version counter when the caller already read it (saves a GET).
        """
        version = self.version() if version is None else version
        if previous is not None and previous.version == version:
            return previous
        pipe = self.redis.pipeline()
        pipe.get(self.keys.grants_version)
        pipe.hgetall(self.keys.grants)
        raw_version, raw = pipe.execute()
        grants = [Grant.model_validate_json(v) for v in raw.values()]
        return GrantSet(grants, int(raw_version or 0))

    def create(self, grant: Grant, now: float | None = None) -> Grant:
        """Validate against the stored grants (delegation limits, break-glass length) and save."""
        now = time.time() if now is None else now
        check_new_grant(grant, self.all(), now, self.break_glass_max_minutes)
        kind = (
            "grant.break_glass"
            if grant.break_glass
            else "grant.delegate"
            if grant.parent
            else "grant.create"
        )
        pipe = self.redis.pipeline()
        pipe.hsetnx(self.keys.grants, grant.id, grant.model_dump_json())
        pipe.incr(self.keys.grants_version)
        pending = self.audit.queue(pipe, [(kind, grant.model_dump(mode="json"), grant.grantor)])
        results = pipe.execute()
        self.audit.confirm(pending, results[-1])
        return grant

    def revoke(self, grant_id: str, by: str, now: float | None = None) -> list[str]:
        """Revoke a grant and everything delegated from it; returns the revoked ids.

        The owner of the data, the grant's grantor, or (break-glass) its declarer may revoke.
        """
        stamp = datetime.fromtimestamp(time.time() if now is None else now, UTC)
        grants = self.all()
        grant = grants.get(grant_id)
        if grant is None:
            raise GrantError(f"no grant {grant_id}")
        if by not in (grant.owner, grant.grantor):
            raise GrantError(
                f"{by} may not revoke {grant_id} (owner {grant.owner}, grantor {grant.grantor})"
            )
        ids = [grant_id, *descendants(grants, grant_id)]
        revoked = [i for i in ids if grants[i].revoked_at is None]
        pipe = self.redis.pipeline()
        for gid in revoked:
            updated = grants[gid].model_copy(update={"revoked_at": stamp, "revoked_by": by})
            pipe.hset(self.keys.grants, gid, updated.model_dump_json())
        pipe.incr(self.keys.grants_version)
        body = {"grant": grant_id, "cascade": revoked[1:] if revoked else [], "revoked": revoked}
        pending = self.audit.queue(pipe, [("grant.revoke", body, by)])
        results = pipe.execute()
        self.audit.confirm(pending, results[-1])
        return revoked

    def list(self, active_only: bool = False, now: float | None = None) -> list[Grant]:
        """Grants sorted by creation; with `active_only`, those in force at `now`."""
        now = time.time() if now is None else now
        grants = self.all()
        effective = GrantSet(grants.values())
        out = sorted(grants.values(), key=lambda g: (g.created_at, g.id))
        if active_only:
            out = [g for g in out if _in_force(effective, g, now)]
        return out


def _in_force(grants: GrantSet, g: Grant, now: float) -> bool:
    eff = grants.effective(g)
    return eff is not None and eff.start <= now < eff.end
