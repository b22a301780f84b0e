"""Privacy transform cost per event per recipient, and the stage's per-batch overheads.

A realistic traffic-camera event (plate, description, road, location, time) goes to four
recipients with different views: police (keep everything: the plain policy view plus a
note), transport (keyed pseudonym + coarser H3 cell + 15-minute time bucket), parks (mask +
redact, consent-gated) and water (class defaults). Each event has its own plate and time, so
no cache hides the HMAC, the H3 lookup or the time bucketing. Also measured: the plain policy
view alone (the baseline the privacy stage adds to), the consent lookup per batch (fakeredis
unless --redis-url) and the PIA gate per event.

    python bench/privacy.py [--events N] [--redis-url redis://127.0.0.1:6379/0]

Last line: one JSON object with ``transform_us`` (per event per recipient, the mean over
the four recipients), ``transform_us_by_recipient``, ``policy_view_us``, ``admit_us`` and
``consent_lookup_ms_per_batch``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from city.privacy.pia import Pia, approve, submit  # noqa: E402
from city.sharing import Decision, view  # noqa: E402
from jobs.privacy_stage import PrivacyStage  # noqa: E402
from queues.keys import Keys  # noqa: E402
from queues.pia import PiaStore  # noqa: E402
from tests.privacy_city import city, incident, keyring  # noqa: E402

RECIPIENTS = {
    "police": "investigation",
    "transport": "operations",
    "parks": "events",
    "water": "operations",
}


def events(n: int, rng: random.Random) -> list[dict]:
    base = datetime(2026, 11, 25, tzinfo=UTC)
    out = []
    for i in range(n):
        when = base + timedelta(seconds=rng.randrange(86400 * 5))
        out.append(
            incident(
                f"e-{i}",
                plate=f"{rng.choice('ABCKX')}{rng.randrange(10_000):04d}",
                time=when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                lat=47.55 + rng.random() * 0.15,
                lon=-122.42 + rng.random() * 0.12,
            )
        )
    return out


def best(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--redis-url")
    args = parser.parse_args()
    rng = random.Random(1)
    batch = events(args.events, rng)
    if args.redis_url:
        from redis import Redis

        redis = Redis.from_url(args.redis_url)
        backend = args.redis_url
    else:
        import fakeredis

        redis = fakeredis.FakeRedis()
        backend = "fakeredis"
    keys = Keys(f"bench{uuid.uuid4().hex[:8]}")
    stage = PrivacyStage.for_config(city(), keys, keyring=keyring())
    decisions = {d: Decision(allow=True, reason="policy", purpose=p) for d, p in RECIPIENTS.items()}
    prepared = stage.prepare(redis, batch[: args.batch])
    n = len(batch)

    def policy_only() -> None:
        d = decisions["police"]
        for event in batch:
            view(event, d)

    per_recipient = {}
    for dept, decision in decisions.items():

        def run(dept: str = dept, decision: Decision = decision) -> None:
            v = prepared.view
            for event in batch:
                v(event, dept, decision)

        run()  # warm: compile the view
        per_recipient[dept] = best(run) / n * 1e6

    try:
        pia = submit(
            None,
            Pia(
                department="cameras",
                type="traffic.incident",
                description="bench",
                purposes=["operations"],
                fields={
                    "plate": "direct",
                    "description": "sensitive",
                    "road": "quasi",
                    "kind": "public",
                    "severity": "public",
                    "lanes_blocked": "public",
                },
                recipients=list(RECIPIENTS) + ["transit"],
                lawful_basis="public_task",
            ),
        )
        review = datetime.now(UTC) + timedelta(days=30)
        store = PiaStore(redis, keys)
        store.put(approve(pia, "bench", review, stage.fingerprint("traffic.incident"), []))
        chunks = [batch[i : i + args.batch] for i in range(0, n, args.batch)]
        admit_s = best(lambda: [stage.admit(redis, c) for c in chunks], 3)
        lookup_s = best(lambda: [stage.prepare(redis, c) for c in chunks], 3)
    finally:
        for key in redis.scan_iter(f"{keys.prefix}:*"):
            redis.delete(key)
    result = {
        "events": n,
        "recipients": len(RECIPIENTS),
        "transform_us": round(sum(per_recipient.values()) / len(per_recipient), 3),
        "transform_us_by_recipient": {k: round(v, 3) for k, v in per_recipient.items()},
        "policy_view_us": round(best(policy_only) / n * 1e6, 3),
        "admit_us": round(admit_s / n * 1e6, 3),
        "consent_lookup_ms_per_batch": round(lookup_s / len(chunks) * 1e3, 3),
        "batch": args.batch,
        "redis": backend,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
