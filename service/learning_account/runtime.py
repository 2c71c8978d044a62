"""Process-wide tuning of the Python runtime for a long-running consumer."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

PYTHON_GC_THRESHOLD = (700, 10, 10)


def parse_gc_threshold(text: str) -> tuple[int, int, int] | None:
    """`a,b,c` as for `gc.set_threshold`, or `python` to keep Python's own (700,10,10)."""
    if text.strip().lower() == "python":
        return None
    parts = [int(part) for part in text.split(",")]
    if len(parts) != 3 or parts[0] <= 0 or min(parts) < 0:
        raise ValueError(f"GC threshold {text!r} is not three counts like 100000,50,100")
    return parts[0], parts[1], parts[2]


def tune_gc(threshold: tuple[int, int, int] | None) -> None:
    """Fewer cyclic-GC passes over objects that live for the whole run.

    With Python's thresholds a batch's allocations (decoded events, account state, outputs)
    start a collection every 700 objects, and the older generations are traversed again and
    again: about a third of the CPU per event, as measured in bench/. `gc.freeze()` puts
    everything alive after start-up (modules, clients, the app) out of the collector's sight,
    and a higher first threshold lets a batch's short-lived objects die by reference count
    before a collection looks at them. Cycles are still collected, later.
    """
    if threshold is None:
        return
    gc.freeze()
    gc.set_threshold(*threshold)


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run` on uvloop's event loop when uvloop is installed (as `faststream run` does):
    the loop's own work per batch (callbacks, socket reads and writes, timers) costs less in
    uvloop's C than in asyncio's Python."""
    try:
        import uvloop
    except ImportError:  # a platform uvloop does not build on
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
