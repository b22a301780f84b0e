"""A pause of Python's cyclic garbage collector around bulk reads.

A Redis reply of thousands of stream entries is thousands of new lists at once: every 700
allocations the collector runs, finds them alive (the reply is still being parsed) and
promotes them, until full collections walk the whole heap again and again (a quarter of the
archive's CPU, measured with perf). The objects hold no cycles and are dropped right after,
so collecting is pointless while they are built; reference counting still frees everything.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic collector inside the block; restore its state afterwards."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
