"""The service of another checkout against this one, over the same backlog, in one run.

    .venv/bin/python bench/run.py --quick --baseline /path/to/checkout --rounds 3 --only-compare

Each round runs the baseline's service, then this tree's, each in a fresh group over a flushed
Redis, so both see the same broker state in turn. The ratios are of the medians (events/s and
the service's own CPU µs per event)."""

from __future__ import annotations

import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

from common import say
from processes import Stack
from service_run import RunResult, flush, service_child, watch


async def compare_runs(
    stack: Stack,
    baseline: Path,
    rounds: int,
    batch_max_records: int,
    limit_s: float,
    running: Any,
) -> dict[str, Any]:
    """Alternate the baseline's service and this tree's over the backlog, `rounds` times."""
    runs: dict[str, list[RunResult]] = {"baseline": [], "current": []}
    for number in range(rounds):
        for kind, tree in (("baseline", baseline), ("current", None)):
            await flush(stack.redis_url)
            group = f"bench-compare-{kind}-{number}"
            child = service_child(stack, group, f"{kind}-{number}", batch_max_records, tree=tree)
            with running(child):
                result = await watch(stack, group, [child], f"{kind} {number}", limit_s=limit_s)
            runs[kind].append(result)
            say(
                f"{kind} {number}: {result.events_per_s:,.0f} events/s,"
                f" {result.cpu_us_per_event.get('consumer')} µs service CPU/event"
            )
    medians = {kind: _medians(results) for kind, results in runs.items()}
    return {
        "baseline": str(baseline),
        "rounds": rounds,
        "runs": {kind: [asdict(result) for result in results] for kind, results in runs.items()},
        "median": medians,
        "ratio_events_per_s": medians["current"]["events_per_s"]
        / medians["baseline"]["events_per_s"],
        "ratio_service_cpu_us_per_event": medians["current"]["service_cpu_us_per_event"]
        / medians["baseline"]["service_cpu_us_per_event"],
    }


def _medians(results: list[RunResult]) -> dict[str, float]:
    def cpu(process: str) -> float:
        return statistics.median(
            result.cpu_us_per_event.get(process) or float("nan") for result in results
        )

    return {
        "events_per_s": statistics.median(result.events_per_s for result in results),
        "service_cpu_us_per_event": cpu("consumer"),
        "tansu_cpu_us_per_event": cpu("tansu"),
        "redis_cpu_us_per_event": cpu("redis"),
    }


def render_comparison(figures: dict[str, Any]) -> str:
    """The comparison as a markdown table: medians of each side and their ratio."""
    base, current = figures["median"]["baseline"], figures["median"]["current"]
    return "\n".join(
        [
            f"baseline: {figures['baseline']}, {figures['rounds']} rounds, medians",
            "",
            "| | baseline | this tree | ratio |",
            "|---|---|---|---|",
            f"| events/s | {base['events_per_s']:,.0f} | {current['events_per_s']:,.0f}"
            f" | {figures['ratio_events_per_s']:.2f}x |",
            f"| service CPU µs/event | {base['service_cpu_us_per_event']:.0f}"
            f" | {current['service_cpu_us_per_event']:.0f}"
            f" | {figures['ratio_service_cpu_us_per_event']:.2f}x |",
            f"| Tansu / Redis CPU µs/event | {base['tansu_cpu_us_per_event']:.0f} /"
            f" {base['redis_cpu_us_per_event']:.0f} | {current['tansu_cpu_us_per_event']:.0f} /"
            f" {current['redis_cpu_us_per_event']:.0f} | |",
        ]
    )
