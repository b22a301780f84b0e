"""Event type patterns: exact types and prefixes (``traffic.*``, ``*``) and their coverage.

Subscriptions, sharing policies, grants, derived-event rules and privacy views all name event
types this way; it lives on its own so each of them can import it without importing the
others. Pure: imports nothing from the project.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

_PATTERN = re.compile(r"^(\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*)?)$")


def type_matcher(patterns: Iterable[str]) -> Callable[[str], bool]:
    """Exact types and prefixes (``traffic.*``; ``*`` = everything) -> one membership test."""
    exact: set[str] = set()
    prefixes: list[str] = []
    for pattern in patterns:
        if pattern == "*":
            return lambda t: True
        if pattern.endswith(".*"):
            prefixes.append(pattern[:-1])
        else:
            exact.add(pattern)
    frozen, pre = frozenset(exact), tuple(prefixes)
    if not pre:
        return frozen.__contains__
    return lambda t: t in frozen or t.startswith(pre)


def pattern_covered(child: str, parents: Iterable[str]) -> bool:
    """True when every type `child` matches is matched by one of `parents`."""
    for parent in parents:
        if parent == "*" or parent == child:
            return True
        if parent.endswith(".*"):
            stem = parent[:-1]
            if child != "*" and child.startswith(stem):
                return True
    return False


def _check_patterns(values: list[str]) -> list[str]:
    for value in values:
        if not _PATTERN.match(value):
            raise ValueError(f"{value!r} is neither an event type nor a prefix like 'traffic.*'")
    return values
