"""How a process asks for the CPU: routine processes yield it to emergency ones, without privileges.

On a busy host an emergency must not wait for the scheduler to get round to it. Lowering one's
own priority needs no privilege, so the routine processes (routine ingest, routine, archive and
escalation workers) do, and the emergency ones keep the normal priority; nothing here ever
raises a priority (a negative nice, a real-time policy), which would need root or CAP_SYS_NICE.

- ``nice 10`` (`ROUTINE_NICE`): a routine process gets about a tenth of the CPU an emergency
  process gets when both want it.
- ``SCHED_BATCH`` (default, `ROUTINE_POLICY`): the same share, but the kernel treats the process
  as CPU-bound: its wake-ups never preempt a running process, so an emergency process (or
  Redis) is not pushed off the CPU by a routine one waking up.
- ``SCHED_IDLE`` (`--sched idle`, ``CITYRELAY_ROUTINE_SCHED=idle``): a routine process runs only
  on CPU nobody else at normal priority wants, and any normal process waking up preempts it at
  once. Best for emergencies on a host of its own; on a host shared with other services that
  keep the CPU busy, routine work can starve (see docs/operations.md).
- ``normal``: leave the policy alone (nice only).

Niceness and policy are set on every thread of the process (Linux keeps both per thread; threads
started later inherit them), and a refusal is a warning, never a failure.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROUTINE_NICE = 10
POLICIES = {"batch": os.SCHED_BATCH, "idle": os.SCHED_IDLE, "normal": os.SCHED_OTHER}
POLICY_ENV = "CITYRELAY_ROUTINE_SCHED"
ROUTINE_POLICY = "batch"
NICE_HELP = f"CPU niceness increment (default: {ROUTINE_NICE} for routine work, 0 for emergency)"
SCHED_HELP = (
    f"CPU scheduling policy: {', '.join(POLICIES)} (default for routine work: ${POLICY_ENV} or "
    f"{ROUTINE_POLICY}; emergency work: normal)"
)


def routine_policy(requested: str | None = None) -> str:
    policy = requested or os.environ.get(POLICY_ENV) or ROUTINE_POLICY
    if policy not in POLICIES:
        choices = ", ".join(POLICIES)
        raise ValueError(f"unknown scheduling policy {policy!r}; choose one of {choices}")
    return policy


def yield_cpu(nice: int | None, policy: str | None, routine: bool) -> None:
    """Apply the process's CPU priority: for routine work by default nice 10 and
    `routine_policy()`; for emergency work nothing unless asked. A negative `nice` (asked for
    explicitly) raises priority where permitted and warns where not."""
    increment = nice if nice is not None else (ROUTINE_NICE if routine else 0)
    chosen = routine_policy(policy) if routine or policy else "normal"
    for tid in _threads():  # Linux keeps both per thread; threads started later inherit them
        try:
            if increment:
                niceness = os.getpriority(os.PRIO_PROCESS, tid) + increment
                os.setpriority(os.PRIO_PROCESS, tid, max(-20, min(19, niceness)))
            if chosen != "normal":
                os.sched_setscheduler(tid, POLICIES[chosen], os.sched_param(0))
        except ProcessLookupError:  # the thread ended meanwhile
            continue
        except PermissionError as exc:
            print(f"--nice {increment} --sched {chosen}: not permitted here ({exc}); running at "
                  "normal priority", file=sys.stderr)  # fmt: skip
            return


def _threads() -> list[int]:
    try:
        return sorted(int(task.name) for task in Path("/proc/self/task").iterdir())
    except OSError:
        return [0]
