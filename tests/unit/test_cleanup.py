"""Removing one prefix's data leaves every other prefix's untouched."""

from queues.cleanup import delete_city
from queues.keys import Keys


def test_delete_city_removes_only_its_own_keys_queues_and_workers(redis):
    mine, theirs = Keys("mine"), Keys("theirs")
    for keys in (mine, theirs):
        redis.xadd(keys.inbox("fire"), {"e": "{}"})
        redis.rpush(f"rq:queue:{keys.prefix}.routine", "job")
        redis.sadd("rq:queues", f"rq:queue:{keys.prefix}.routine")
        redis.sadd("rq:workers", f"rq:worker:{keys.prefix}-w1")
    assert delete_city(redis, mine) == 2
    assert not redis.exists(mine.inbox("fire"), "rq:queue:mine.routine")
    assert redis.exists(theirs.inbox("fire"), "rq:queue:theirs.routine") == 2
    assert redis.smembers("rq:queues") == {b"rq:queue:theirs.routine"}
    assert redis.smembers("rq:workers") == {b"rq:worker:theirs-w1"}
