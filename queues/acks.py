"""Emergency acknowledgements and escalation state in Redis.

One hash per emergency (`Keys.emergency`) holds the event and, per recipient department,
fields ``{dept}|{what}``: ``delivered`` and ``deadline`` (ms, Redis clock), ``acked`` and
``ack_by`` once acknowledged, and per escalation level n ``l{n}`` (claimed at), ``l{n}_done``
and ``l{n}_result``; ``level`` is the highest level claimed and ``stopped`` the level an
acknowledgement cancelled. `Keys.emergencies` indexes them by delivery time.

A department acknowledges by setting its own key `Keys.ack` (``{ms}|{by}``, ``SET NX``: the
first acknowledgement's time is kept). The key sits under the department's name, so the
department's Redis ACL lets it acknowledge for itself and nobody else, without any access to
the tracking hash or the audit chain.

`claim_level` (Lua, run by the escalation worker) starts an escalation level only if the
department has not acknowledged and the level was not started before, and appends the level's
inbox notices in the same step. It copies a found acknowledgement into the hash (``acked``,
``ack_by``) and says whether it was the first to see it, so the acknowledgement is audited
once. So an acknowledgement that lands between two levels cancels the later ones, and a check
that runs twice does nothing twice (a check that crashed mid-level resumes its channel sends,
which carry the same idempotency key).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from redis.client import Pipeline

from queues.keys import Keys
from queues.message import Message

TRACK_TTL_S = 7 * 24 * 3600
EMERGENCY = "emergency"

# KEYS: the hash, the department's ack key, then every stream a fresh claim appends to.
# ARGV: dept, level, the fields. Returns {outcome, ms, first sight of the ack (0/1), ack by}.
_CLAIM = """
local h, ack, d, lvl = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
if redis.call('EXISTS', h) == 0 then return {'untracked', 0, 0, ''} end
if redis.call('HEXISTS', h, d .. '|delivered') == 0 then return {'not_recipient', 0, 0, ''} end
local a = redis.call('GET', ack)
if a then
  local sep = string.find(a, '|', 1, true)
  local at, by = '0', a
  if sep then at, by = string.sub(a, 1, sep - 1), string.sub(a, sep + 1) end
  local first = redis.call('HSETNX', h, d .. '|acked', at)
  if first == 1 then redis.call('HSET', h, d .. '|ack_by', by) end
  redis.call('HSETNX', h, d .. '|stopped', lvl)
  return {'acked', at, first, by}
end
if redis.call('HEXISTS', h, d .. '|l' .. lvl .. '_done') == 1 then return {'done', 0, 0, ''} end
local t = redis.call('TIME')
local ms = tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
if redis.call('HEXISTS', h, d .. '|l' .. lvl) == 1 then return {'resume', ms, 0, ''} end
redis.call('HSET', h, d .. '|l' .. lvl, ms, d .. '|level', lvl)
for k = 3, #KEYS do
  local args = {'XADD', KEYS[k], '*'}
  for i = 3, #ARGV do args[#args + 1] = ARGV[i] end
  redis.call(unpack(args))
end
return {'claimed', ms, 0, ''}
"""

_FINISH = """
local t = redis.call('TIME')
local ms = tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
redis.call('HSET', KEYS[1], ARGV[1] .. '|l' .. ARGV[2] .. '_done', ms,
           ARGV[1] .. '|l' .. ARGV[2] .. '_result', ARGV[3])
return ms
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class AckResult:
    """`outcome`: ``acked`` (now), ``already`` (earlier; `at_ms` is that time), ``untracked``
    (no such emergency, or its record expired) or ``not_recipient``."""

    event_id: str
    dept: str
    outcome: str
    at_ms: int

    @property
    def ok(self) -> bool:
        return self.outcome in ("acked", "already")


@dataclass(frozen=True)
class Claim:
    """`outcome`: ``claimed`` (this caller runs the level), ``resume`` (started before but not
    finished: run the channel sends again), ``done``, ``acked`` (escalation stops; `at_ms` and
    `ack_by` are the acknowledgement's, `first_ack` says this claim recorded it),
    ``untracked`` or ``not_recipient``."""

    outcome: str
    at_ms: int
    first_ack: bool = False
    ack_by: str = ""

    @property
    def run(self) -> bool:
        return self.outcome in ("claimed", "resume")


@dataclass
class LevelRecord:
    at_ms: int
    done_ms: int | None = None
    result: dict[str, Any] | None = None


@dataclass
class RecipientStatus:
    delivered_ms: int
    deadline_ms: int
    acked_ms: int | None = None
    ack_by: str | None = None
    level: int = 0
    stopped_at_level: int | None = None
    levels: dict[int, LevelRecord] = field(default_factory=dict)

    @property
    def state(self) -> str:
        if self.acked_ms is not None:
            return "acknowledged"
        return f"escalated (level {self.level})" if self.level else "delivered"


@dataclass
class EmergencyStatus:
    event_id: str
    event: dict[str, Any]
    severity: str
    ing: str
    recipients: dict[str, RecipientStatus]

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "type": self.event.get("type"),
            "severity": self.severity,
            "recipients": {
                dept: {
                    "state": r.state,
                    "delivered_ms": r.delivered_ms,
                    "deadline_ms": r.deadline_ms,
                    "acked_ms": r.acked_ms,
                    "ack_by": r.ack_by,
                    "level": r.level,
                    "stopped_at_level": r.stopped_at_level,
                    "levels": {
                        str(n): {"at_ms": lv.at_ms, "done_ms": lv.done_ms, "result": lv.result}
                        for n, lv in sorted(r.levels.items())
                    },
                }
                for dept, r in self.recipients.items()
            },
        }


class EmergencyStore:
    """The Redis side of emergency tracking for one key prefix."""

    def __init__(self, redis: Redis, keys: Keys):
        self.redis = redis
        self.keys = keys
        self._claim = redis.register_script(_CLAIM)
        self._finish = redis.register_script(_FINISH)

    # -- escalation -----------------------------------------------------------------------------
    def claim_level(
        self,
        event_id: str,
        dept: str,
        level: int,
        notices: Sequence[str] = (),
        fields: Sequence[tuple[str, str]] = (),
    ) -> Claim:
        """Start escalation `level` for `dept` unless it acknowledged or the level ran; a fresh
        claim XADDs `fields` to every stream in `notices` in the same atomic step."""
        args: list[Any] = [dept, level]
        for name, value in fields:
            args += [name, value]
        outcome, at, first, by = self._claim(
            keys=[self.keys.emergency(event_id), self.keys.ack(dept, event_id), *notices],
            args=args,
        )
        return Claim(_text(outcome), int(at), bool(first), _text(by))

    def finish_level(self, event_id: str, dept: str, level: int, result: dict[str, Any]) -> int:
        return int(
            self._finish(
                keys=[self.keys.emergency(event_id)],
                args=[dept, level, json.dumps(result, separators=(",", ":"))],
            )
        )

    # -- reading --------------------------------------------------------------------------------
    def status(self, event_id: str) -> EmergencyStatus | None:
        raw = self.redis.hgetall(self.keys.emergency(event_id))
        if not raw:
            return None
        fields = {_text(k): _text(v) for k, v in raw.items()}
        recipients: dict[str, RecipientStatus] = {}
        for name, value in fields.items():
            dept, sep, what = name.partition("|")
            if sep and what == "delivered":
                recipients[dept] = RecipientStatus(
                    delivered_ms=int(value), deadline_ms=int(fields[f"{dept}|deadline"])
                )
        pipe = self.redis.pipeline(transaction=False)
        for dept in recipients:
            pipe.get(self.keys.ack(dept, event_id))
        for (dept, r), ack in zip(recipients.items(), pipe.execute(), strict=True):
            if f"{dept}|acked" in fields:
                r.acked_ms = int(fields[f"{dept}|acked"])
                r.ack_by = fields.get(f"{dept}|ack_by")
            elif ack is not None:  # acknowledged; no check has seen it yet
                r.acked_ms, r.ack_by = parse_ack(ack)
            r.level = int(fields.get(f"{dept}|level", 0))
            if f"{dept}|stopped" in fields:
                r.stopped_at_level = int(fields[f"{dept}|stopped"])
            for n in range(1, r.level + 1):
                if f"{dept}|l{n}" not in fields:
                    continue
                done = fields.get(f"{dept}|l{n}_done")
                result = fields.get(f"{dept}|l{n}_result")
                r.levels[n] = LevelRecord(
                    int(fields[f"{dept}|l{n}"]),
                    int(done) if done else None,
                    json.loads(result) if result else None,
                )
        return EmergencyStatus(
            event_id=event_id,
            event=json.loads(fields["event"]),
            severity=fields.get("severity", "default"),
            ing=fields.get("ing", ""),
            recipients=dict(sorted(recipients.items())),
        )

    def recent(self, count: int = 20) -> list[tuple[str, int]]:
        """The most recent tracked emergencies: (event id, delivered ms), newest first."""
        rows: list[Any] = self.redis.zrevrange(  # type: ignore[assignment]
            self.keys.emergencies, 0, count - 1, withscores=True
        )
        return [(_text(member), int(score)) for member, score in rows]


def track(
    pipe: Pipeline,
    keys: Keys,
    event_id: str,
    body: str,
    severity: str,
    ing: str,
    delivered_ms: int,
    deadlines_ms: Mapping[str, int],
    ttl_s: int = TRACK_TTL_S,
) -> None:
    """Record a delivered emergency and each recipient's deadline (queued on `pipe`)."""
    key = keys.emergency(event_id)
    mapping: dict[Any, Any] = {
        "event": body,
        "severity": severity,
        "ing": ing,
        "at": delivered_ms,
    }
    for dept, deadline in deadlines_ms.items():
        mapping[f"{dept}|delivered"] = delivered_ms
        mapping[f"{dept}|deadline"] = deadline
    pipe.hset(key, mapping=mapping)
    pipe.expire(key, ttl_s)
    pipe.zadd(keys.emergencies, {event_id: delivered_ms})


def record_inbox_acks(
    redis: Redis,
    keys: Keys,
    dept: str,
    stream: str,
    messages: Sequence[Message | str],
    by: str,
) -> list[AckResult]:
    """The inbox hook: acknowledging emergency messages acknowledges their emergencies.

    Messages carry their event; bare entry ids are looked up (one pipelined round trip) and
    only entries whose ``pri`` is emergency count."""
    event_ids: list[str] = []
    bare = [m for m in messages if isinstance(m, str)]
    for message in messages:
        if not isinstance(message, str) and message.event.get("priority") == EMERGENCY:
            event_ids.append(message.event_id)
    if bare:
        pipe = redis.pipeline(transaction=False)
        for entry_id in bare:
            pipe.xrange(stream, entry_id, entry_id)
        for entries in pipe.execute():
            for _, entry in entries:
                if entry.get(b"pri") == b"emergency":
                    event_ids.append(str(json.loads(entry[b"e"]).get("id")))
    unique = list(dict.fromkeys(event_ids))
    if not unique:
        return []
    return acknowledge(redis, keys, unique, dept, by)


def parse_ack(value: bytes | str) -> tuple[int, str]:
    at, _, by = _text(value).partition("|")
    return (int(at) if at.isdigit() else 0), by


def acknowledge(
    redis: Redis, keys: Keys, event_ids: Sequence[str], dept: str, by: str
) -> list[AckResult]:
    """Record `dept`'s acknowledgement of each event (two round trips).

    Needs only what a department's ACL grants: TIME, HEXISTS/EXISTS on the tracking hashes and
    SET/GET on its own ack keys. The escalation check audits it (``emergency.ack``)."""
    if not event_ids:
        return []
    pipe = redis.pipeline(transaction=False)
    pipe.time()
    for event_id in event_ids:
        pipe.exists(keys.emergency(event_id))
        pipe.hexists(keys.emergency(event_id), f"{dept}|delivered")
    replies = pipe.execute()
    secs, micros = replies[0]
    now_ms = int(secs) * 1000 + int(micros) // 1000
    results: list[AckResult] = []
    pipe = redis.pipeline(transaction=False)
    pending: list[int] = []
    for i, event_id in enumerate(event_ids):
        exists, recipient = replies[1 + 2 * i], replies[2 + 2 * i]
        outcome = "untracked" if not exists else "not_recipient" if not recipient else "acked"
        results.append(AckResult(event_id, dept, outcome, 0))
        if outcome == "acked":
            value = f"{now_ms}|{by}"
            pipe.set(keys.ack(dept, event_id), value, nx=True, get=True, ex=TRACK_TTL_S)
            pending.append(i)
    for i, previous in zip(pending, pipe.execute() if pending else [], strict=True):
        event_id = event_ids[i]
        if previous is None:
            results[i] = AckResult(event_id, dept, "acked", now_ms)
        else:
            results[i] = AckResult(event_id, dept, "already", parse_ack(previous)[0])
    return results
