"""Chaos, small: SIGKILL ingest and worker processes under load; nothing lost, nothing twice.

The same run as `python bench/chaos.py` (which takes 1,000,000 events and 20 kills), on
20,000 events and 3 kills, each at a random moment, on a random process.
"""

from __future__ import annotations

import pytest

from bench.chaos import run_chaos


@pytest.mark.integration
def test_killing_processes_under_load_loses_and_duplicates_nothing(redis_url):
    result = run_chaos(
        redis_url,
        events=20_000,
        kills=3,
        rate=1500,
        claim_idle_ms=2000,
        drain_timeout_s=90,
        seed=3,
    )
    assert result["kills"] == 3
    assert result["lost"] == 0, result
    assert result["duplicated"] == 0, result
    assert result["wrong"] == 0, result
    # Dead letters are exactly the invalid inputs (no poison, no unroutable event).
    assert result["dead_lettered"] == result["invalid_published"] > 0, result
    assert set(result["dead_letter_reasons"]) <= {"invalid_envelope", "malformed_json"}, result
    assert result["deliveries"] == result["expected_deliveries"] > 0, result
    assert result["producer_retries"] > 0 and result["emergencies"] > 0
    assert result["failed_jobs"] == 0, result
    # The counters agree with the inboxes even across kills (delivery counts in its script).
    assert result["handled"] >= result["inputs_published"], result
    assert result["inbox_trimmed"] == 0, result
    # Every process stops on SIGTERM, and a killed worker's RQ scheduler child exits by itself
    # (RQ would leave it running).
    assert result["ignored_sigterm"] == [], result
    assert result["leftover_process_groups"] == 0, result
