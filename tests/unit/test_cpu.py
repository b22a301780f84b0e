"""CPU priority without privileges (workers/cpu.py): routine processes yield, emergency ones
keep the normal priority, and nothing ever raises a priority by default (the tests run as root
here, where a negative nice would succeed and hide a deployment that relies on it)."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from workers.cpu import POLICY_ENV, routine_policy, yield_cpu

NAMES = {os.SCHED_OTHER: "normal", os.SCHED_BATCH: "batch", os.SCHED_IDLE: "idle"}


def _child(queue, nice, policy, routine, env):  # type: ignore[no-untyped-def]
    if env is None:
        os.environ.pop(POLICY_ENV, None)
    else:
        os.environ[POLICY_ENV] = env
    yield_cpu(nice, policy, routine)
    queue.put((NAMES[os.sched_getscheduler(0)], os.getpriority(os.PRIO_PROCESS, 0)))


def run_in_child(nice=None, policy=None, routine=True, env=None):  # type: ignore[no-untyped-def]
    """yield_cpu in a fresh process (it cannot be undone in this one): (policy, nice)."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(queue, nice, policy, routine, env))
    child.start()
    result = queue.get(timeout=30)
    child.join(timeout=30)
    return result


@pytest.fixture(autouse=True)
def _normal_priority():
    if os.sched_getscheduler(0) != os.SCHED_OTHER or os.getpriority(os.PRIO_PROCESS, 0) != 0:
        pytest.skip("the test process itself does not run at normal priority")


def test_routine_work_yields_with_nice_10_and_sched_batch_by_default():
    assert run_in_child(routine=True) == ("batch", 10)


def test_emergency_work_keeps_normal_priority_and_never_a_negative_nice():
    assert run_in_child(routine=False) == ("normal", 0)


def test_sched_idle_on_request_by_flag_or_environment():
    assert run_in_child(routine=True, policy="idle") == ("idle", 10)
    assert run_in_child(routine=True, env="idle") == ("idle", 10)
    assert run_in_child(routine=True, env="normal") == ("normal", 10)


def test_an_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="choose one of batch, idle, normal"):
        routine_policy("fifo")
