"""The privacy stage of the route job: PIA gate, consent lookups, per-recipient views.

Per batch the route job calls::

    stage = PrivacyStage.for_config(context.config, context.keys)   # cached per config
    admitted, quarantined = stage.admit(redis, events, pipe)  # PIA gate, writes via pipe
    prepared = stage.prepare(redis, admitted)                 # one HMGET: consent
    for each (event, recipient subscription, decision) with decision.allow:
        body, note = prepared.view_note(event, dept, decision)   # body None: withheld
        row = decision.audit_row(...) + note.audit()

Without a ``privacy:`` section the stage is inert: `admit` admits everything without touching
Redis, `prepare` does no lookup, and `view` is exactly `city.sharing.view`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis
from redis.client import Pipeline

from city.config import CityConfig
from city.privacy import KeyRing, Note, PrivacyConfig, PrivacyPolicy, parse_privacy
from city.privacy.consent import ConsentRecord, status_of
from city.privacy.pia import Pia, effective_status, fingerprint, integration_id, unlisted_fields
from city.sharing import Decision, compile_subscriptions
from city.sharing import view as policy_view
from queues.consent import ConsentRegistry
from queues.keys import Keys
from queues.pia import PiaStore, quarantine

Quarantined = tuple[dict[str, Any], str, str]  # (event, reason, detail)
_PASS = Note(transform="none", basis="n/a")


class PrivacyStage:
    """Everything the privacy stage compiles once per (config, key prefix)."""

    # (id(config), prefix) -> (config, stage): the config is held so its id is not reused.
    _cache: dict[tuple[int, str], tuple[CityConfig, PrivacyStage]] = {}

    def __init__(
        self,
        config: PrivacyConfig | None,
        keys: Keys,
        subscribers: Mapping[str, Mapping[str, set[str]]] | None = None,
        keyring: KeyRing | None = None,
    ):
        self.config = config
        self.keys = keys
        self.policy = None if config is None else PrivacyPolicy(config, keyring)
        # type -> recipient dept -> purposes (the integration's recipients, for fingerprints)
        self.subscribers = {t: dict(d) for t, d in (subscribers or {}).items()}
        self._fingerprints: dict[str, str] = {}
        self._stores: dict[int, PiaStore] = {}
        self._consent_purposes: dict[str, tuple[str, ...]] = {}
        self._keys_checked = 0.0
        self._keys_mtime = self._mtime()

    KEYS_CHECK_S = 30.0

    def _mtime(self) -> float | None:
        source = self.policy.keys.source if self.policy else None
        try:
            return source.stat().st_mtime if source else None
        except OSError:
            return None

    def refresh_keys(self, now: float) -> bool:
        """Reload the keys file when it changed (checked at most every 30 s), so keys added
        for a new period, or a period deleted, take effect without a restart."""
        if self.policy is None or self.policy.keys.source is None:
            return False
        if now - self._keys_checked < self.KEYS_CHECK_S:
            return False
        self._keys_checked = now
        mtime = self._mtime()
        if mtime is None or mtime == self._keys_mtime:
            return False
        self.policy.keys = KeyRing.load_file(self.policy.keys.source)
        self._keys_mtime = mtime
        return True

    @property
    def enabled(self) -> bool:
        return self.policy is not None

    @classmethod
    def for_config(
        cls,
        city: CityConfig,
        keys: Keys,
        base_dir: Path | None = None,
        keyring: KeyRing | None = None,
    ) -> PrivacyStage:
        """The stage for a city config (cached per config object and prefix)."""
        cache_key = (id(city), keys.prefix)
        cached = cls._cache.get(cache_key)
        if cached is not None and cached[0] is city and keyring is None:
            return cached[1]
        config = parse_privacy(city.privacy, "<config>", city.department_ids)
        if config is not None and keyring is None:
            keyring = KeyRing.load(config.keys, base_dir)
        found = cls(config, keys, subscribers_of(city), keyring)
        if len(cls._cache) >= 16:  # old config versions: let them go
            cls._cache.clear()
        cls._cache[cache_key] = (city, found)
        return found

    def fingerprint(self, etype: str) -> str:
        found = self._fingerprints.get(etype)
        if found is None:
            found = fingerprint(self.config, etype, self.subscribers.get(etype, {}))
            self._fingerprints[etype] = found
        return found

    # ---------------------------------------------------------------- PIA gate

    def admit(
        self,
        redis: Redis,
        events: Sequence[dict[str, Any]],
        pipe: Redis | Pipeline | None = None,
        now: float | None = None,
    ) -> tuple[list[dict[str, Any]], list[Quarantined]]:
        """Split a batch into admitted events and quarantined ones (with reasons).

        Reads the PIAs with one GET (reloaded only when they changed); quarantine writes and
        alerts are queued on `pipe` (executed here when no pipe is given).
        """
        if self.policy is None or not self.config or not events:
            return list(events), []
        store = self._stores.get(id(redis))
        if store is None:
            store = self._stores[id(redis)] = PiaStore(redis, self.keys)
        version, pias = store.load()
        now = time.time() if now is None else now
        admitted: list[dict[str, Any]] = []
        held: list[Quarantined] = []
        for event in events:
            verdict = self._verdict(version, pias, event, now)
            if verdict is None:
                admitted.append(event)
            else:
                held.append((event, verdict[0], verdict[1]))
        if held:
            if pipe is None:
                own = redis.pipeline(transaction=False)
                quarantine(own, self.keys, held)
                own.execute()
            else:
                quarantine(pipe, self.keys, held)
        return admitted, held

    def _verdict(
        self, version: int, pias: Mapping[str, Pia], event: Mapping[str, Any], now: float
    ) -> tuple[str, str] | None:
        etype = event["type"]
        assert self.config is not None
        if not self.config.pia_required(etype):
            return None
        integration = integration_id(str(event.get("department", "")), etype)
        pia = pias.get(integration)
        status = effective_status(pia, self.fingerprint(etype), now)
        if status != "approved":
            detail = {
                "missing": f"no PIA for {integration}",
                "draft": f"{integration} changed since its PIA was approved: PIA is a draft again",
                "expired": f"the PIA of {integration} is past its review date",
            }.get(status, f"the PIA of {integration} is {status}, not approved")
            return f"pia-{status}", detail
        assert pia is not None
        extra = unlisted_fields(pia, event.get("data"))
        if extra:
            return "pia-unlisted-fields", f"fields {extra} are not in the PIA of {integration}"
        return None

    # ---------------------------------------------------------------- consent + views

    def prepare(
        self, redis: Redis, events: Sequence[Mapping[str, Any]], now: float | None = None
    ) -> Prepared:
        """Look up the consent of every citizen the batch is about (one round trip)."""
        now = time.time() if now is None else now
        if self.policy is None:
            return Prepared(None, now)
        self.refresh_keys(now)
        consent_types = self.policy.consent_types()
        subjects: dict[str, str] = {}
        pairs: list[tuple[str, str]] = []
        for event in events:
            etype = event["type"]
            if etype in consent_types:
                cid = self.policy.subject_id(event)
                if cid is not None:
                    subjects[str(event["id"])] = cid
                    pairs.extend((cid, p) for p in self.consent_purposes(etype))
        records = ConsentRegistry(redis, self.keys).lookup(pairs) if pairs else {}
        return Prepared(self.policy, now, frozenset(consent_types), subjects, records)

    def consent_purposes(self, etype: str) -> tuple[str, ...]:
        """Purposes some subscriber receives `etype` for on the basis of consent."""
        found = self._consent_purposes.get(etype)
        if found is None:
            assert self.policy is not None
            purposes = {
                purpose
                for dept, dept_purposes in self.subscribers.get(etype, {}).items()
                for purpose in dept_purposes
                if (view := self.policy.compiled(etype, dept, purpose)) is not None
                and view.basis == "consent"
            }
            found = self._consent_purposes[etype] = tuple(sorted(purposes))
        return found


@dataclass
class Prepared:
    """A batch ready for per-recipient views (consent already read)."""

    policy: PrivacyPolicy | None
    now: float
    consent_types: frozenset[str] = frozenset()
    subjects: dict[str, str] = field(default_factory=dict)
    records: dict[str, dict[str, ConsentRecord]] = field(default_factory=dict)
    last: Note = _PASS

    def view_note(
        self, event: Mapping[str, Any], dept: str, decision: Decision
    ) -> tuple[dict[str, Any] | None, Note]:
        """What `dept` receives (None: withheld) and the note for the audit row."""
        policy = self.policy
        if policy is None:
            return policy_view(event, decision), _PASS
        etype = event["type"]
        entitled = policy.entitled(etype, dept, decision)
        state = "n/a"
        if entitled.gated and etype in self.consent_types:  # the view rests on consent
            cid = self.subjects.get(str(event["id"]))
            state = (
                "no-subject"
                if cid is None
                else status_of(self.records.get(cid, {}), decision.purpose, self.now)
            )
        return entitled.view(event, policy.keys, state)

    def view(
        self, event: Mapping[str, Any], dept: str, decision: Decision
    ) -> dict[str, Any] | None:
        """What `dept` receives, or None when withheld; the note is kept in `last`."""
        body, self.last = self.view_note(event, dept, decision)
        return body


def subscribers_of(city: CityConfig) -> dict[str, dict[str, set[str]]]:
    """type -> recipient department -> purposes, from the config's subscriptions."""
    index = compile_subscriptions(city.departments)
    types = set(city.privacy.get("types", {}) if isinstance(city.privacy, dict) else {})
    out: dict[str, dict[str, set[str]]] = {}
    for etype in types:
        for sub in index.for_type(etype):
            out.setdefault(etype, {}).setdefault(sub.dept, set()).add(sub.purpose)
    return out
