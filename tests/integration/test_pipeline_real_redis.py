"""The pipeline behaviour tests, run again on a real Redis (real Lua, real consumer groups)."""

from tests.unit.test_pipeline import (  # noqa: F401 - collected here with the real-Redis fixture
    harness,
    test_consumer_killed_after_dedupe_but_before_enqueue_loses_nothing,
    test_consumer_killed_between_read_and_ack_still_delivers_exactly_once,
    test_emergency_is_read_and_queued_ahead_of_a_routine_backlog,
    test_entry_that_keeps_failing_is_dead_lettered_as_poison,
    test_event_reaches_exactly_the_routed_departments,
    test_malformed_event_is_dead_lettered_with_reason_and_original,
    test_route_job_run_twice_delivers_once,
    test_same_event_id_published_twice_is_delivered_once,
)
