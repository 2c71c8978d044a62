"""The service of another checkout against this one, over the same backlog, in one run.

    .venv/bin/python bench/run.py --quick --baseline /path/to/checkout --rounds 3 --only-compare

Each round runs the baseline's service, then this tree's, each in a fresh group over a flushed
Redis, so both see the same broker state in turn; one instance, then (with --compare-instances
1,2) two in one group. The ratios are of the medians (events/s and the service's own CPU µs per
event)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
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
    batch_max_records: int | None,
    limit_s: float,
    running: Any,
    instances: Sequence[int] = (1,),
) -> dict[str, Any]:
    """Alternate the baseline's service and this tree's over the backlog, `rounds` times, with
    each number of `instances` in one group (the figures of 1 at the top level, of 2 under
    `"instances_2"`, ...)."""
    instances = sorted({1, *instances})
    runs: dict[int, dict[str, list[RunResult]]] = {
        count: {"baseline": [], "current": []} for count in instances
    }
    for number in range(rounds):
        for count in instances:
            for kind, tree in (("baseline", baseline), ("current", None)):
                await flush(stack.redis_url)
                group = f"bench-compare-{kind}-x{count}-{number}"
                children = [
                    service_child(
                        stack, group, f"{kind}-x{count}-{number}{n}", batch_max_records, tree=tree
                    )
                    for n in range(count)
                ]
                with running(*children):
                    label = f"{kind} x{count} {number}"
                    result = await watch(stack, group, children, label, limit_s=limit_s)
                runs[count][kind].append(result)
                say(
                    f"{label}: {result.events_per_s:,.0f} events/s,"
                    f" {result.cpu_us_per_event.get('consumer')} µs service CPU/event"
                )
    figures: dict[str, Any] = {"baseline": str(baseline), "rounds": rounds}
    for count in instances:
        of_count = _figures(runs[count])
        if count == 1:
            figures.update(of_count)
        else:
            figures[f"instances_{count}"] = of_count
    return figures


def _figures(runs: dict[str, list[RunResult]]) -> dict[str, Any]:
    medians = {kind: _medians(results) for kind, results in runs.items()}
    return {
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
    """The comparison as a markdown table: medians of each side and their ratio, per number of
    instances."""
    lines = [
        f"baseline: {figures['baseline']}, {figures['rounds']} rounds alternated, medians",
        "",
        "| instances | | baseline | this tree | ratio |",
        "|---|---|---:|---:|---:|",
    ]
    more = (int(key.split("_")[1]) for key in figures if key.startswith("instances_"))
    counts = [1, *sorted(more)]
    for count in counts:
        of_count = figures if count == 1 else figures[f"instances_{count}"]
        base, current = of_count["median"]["baseline"], of_count["median"]["current"]
        lines += [
            f"| {count} | events/s | {base['events_per_s']:,.0f} | {current['events_per_s']:,.0f}"
            f" | {of_count['ratio_events_per_s']:.2f}x |",
            f"| {count} | service CPU µs/event | {base['service_cpu_us_per_event']:.0f}"
            f" | {current['service_cpu_us_per_event']:.0f}"
            f" | {of_count['ratio_service_cpu_us_per_event']:.2f}x |",
            f"| {count} | Tansu / Redis CPU µs/event | {base['tansu_cpu_us_per_event']:.0f} /"
            f" {base['redis_cpu_us_per_event']:.0f} | {current['tansu_cpu_us_per_event']:.0f} /"
            f" {current['redis_cpu_us_per_event']:.0f} | |",
        ]
    return "\n".join(lines)
