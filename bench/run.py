"""End-to-end benchmark of the learning-account service, with its references, in one command.

    .venv/bin/python bench/run.py                 # 20,000 students (a few minutes)
    .venv/bin/python bench/run.py --quick         # ~2,000 students, a CI smoke run
    .venv/bin/python bench/run.py --students 5000 --profile

One run starts its own Tansu broker and two redis-servers on free ports, then, phase by phase:

1. in-process (no Kafka): the Redis memory per student after four years of history, and the
   per-event cost of the Processor at history lengths 1, 100, 250 and 500 (memory.py);
2. the latency from input to balance-changed with a producer paced at --rate events/s, for the
   service and then for the aiokafka pass-through on the same stream (latency.py);
3. the backlog: a synthetic load produced completely BEFORE any consumer under test starts
   (load.py); the partition ends come from the producer's RecordMetadata;
4. the real service (`python -m learning_account serve`, fresh group, flushed Redis) over
   that backlog: events/s from its first commit until its committed offsets reach the ends, and
   the CPU µs per event of the service, Tansu and Redis over that window (service_run.py);
5. the references over the same backlog, each in its own group (references.py): the naive
   per-message handler, the aiokafka pass-through and the librdkafka pass-through (the broker's
   limit for this workload);
6. two service instances in one group over the same backlog (scaling);
7. the Redis limit: the service's own load and commit scripts on the bench's accounts, captured
   in-process and replayed as fast as one pipelined connection allows (limits.py);
8. prints a markdown summary and writes everything to bench/results/latest.json (report.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common import (
    CEILING_OUT,
    DEFAULT_BATCH_MAX_RECORDS,
    LIBRDKAFKA_OUT,
    NAIVE_OUT,
    RESULTS_DIR,
    say,
)
from compare import compare_runs, render_comparison
from latency import caused_by, measure_latency, own_id
from limits import redis_limit
from load import Load, first_students, generate_load, produce
from memory import measure_history, measure_memory
from processes import (
    REDIS_ARGS,
    Child,
    Stack,
    attach_py_spy,
    reference_child,
    start_servers,
    summarize_collapsed,
)
from report import describe, render, summarize
from service_run import RunResult, count_held, flush, redis_used_memory, service_child, watch

from learning_account.runtime import tune_gc
from learning_account.settings import Settings
from learning_account.wire import BALANCE_CHANGED_TOPIC
from learning_account_dev.devstack import LocalProcess

# the Redis replay keeps every recorded command in memory (about 1.2 KB an event)
REPLAY_STUDENTS_MAX = 8000


@dataclass
class Bench:
    """One run: its options, its servers, the consumers running now, and what it measured."""

    args: argparse.Namespace
    students: int
    stack: Stack
    in_process_redis: str
    results: dict[str, Any]
    children: list[Child] = field(default_factory=list)

    @property
    def quick(self) -> bool:
        return bool(self.args.quick)

    @property
    def timeout(self) -> float:
        return float(self.args.timeout or (120 if self.quick else 900))

    @contextlib.contextmanager
    def running(self, *children: Child) -> Iterator[list[Child]]:
        """The children, stopped when the block ends (and by run() if it fails)."""
        self.children.extend(children)
        try:
            yield list(children)
        finally:
            for child in children:
                child.stop()
                self.children.remove(child)


async def in_process_phase(bench: Bench) -> None:
    """Memory per student and cost against history length (no Kafka)."""
    mem_students = bench.args.memory_students or (300 if bench.quick else 2000)
    say(f"memory: four years of history for {mem_students} students (in-process)")
    bench.results["memory"] = await measure_memory(bench.in_process_redis, mem_students)
    hist_students = 10 if bench.quick else 50
    say(f"history: per-event cost at event #1..#500 ({hist_students} students per batch)")
    bench.results["history"] = await measure_history(bench.in_process_redis, hist_students)
    say("history: the same as the live service has its store (snapshots)")
    bench.results["history_live"] = await measure_history(
        bench.in_process_redis, hist_students, live=True
    )


async def latency_phase(bench: Bench) -> None:
    """Latency at a fixed rate while the topics are still nearly empty: Tansu keeps everything in
    memory and its fetches slow down as topics grow, which would put the broker's size in the
    figures. The service first, then the librdkafka and the aiokafka pass-throughs on the same
    stream."""
    args, stack = bench.args, bench.stack
    seconds = args.latency_seconds or (4 if bench.quick else 15)
    await flush(stack.redis_url)
    references = {
        "librdkafka": (LIBRDKAFKA_OUT, "latency_ceiling_librdkafka"),
        "ceiling": (CEILING_OUT, "latency_ceiling"),
    }
    for kind in ("service", *references):
        say(f"latency: {kind}, {args.rate:,} events/s for {seconds}s")
        if kind == "service":
            child = service_child(
                stack, "bench-latency-service", "latency-service", args.batch_max_records
            )
            topic, cause_of, key = BALANCE_CHANGED_TOPIC, caused_by, "latency"
        else:
            topic, key = references[kind]
            child = reference_child(stack, kind, f"bench-latency-{kind}", topic, tree_batch(args))
            cause_of = own_id
        with bench.running(child):
            bench.results[key] = await measure_latency(stack, args.rate, seconds, topic, cause_of)
        figures = bench.results[key]
        say(f"latency: {kind} p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms")


async def load_phase(bench: Bench) -> Load:
    say(f"generating the load for {bench.students:,} students")
    load = generate_load(bench.students)
    say(f"producing {len(load.records):,} records ({load.duplicates:,} duplicates)")
    produced = await produce(bench.stack.bootstrap, load.records)
    stack = bench.stack
    stack.ends = produced["ends"]
    bench.results["load"] = {
        "events": stack.total,
        "students": bench.students,
        "duplicates": load.duplicates,
        "by_type": load.by_type,
        "produce_events_per_s": stack.total / produced["seconds"],
        "partition_ends": {f"{t}/{p}": end for (t, p), end in sorted(stack.ends.items())},
    }
    return load


async def service_phase(bench: Bench) -> RunResult:
    """One service instance over the backlog (py-spy attached with --profile)."""
    args, stack = bench.args, bench.stack
    await flush(stack.redis_url)
    memory_before = await redis_used_memory(stack.redis_url)
    say("service x1: consuming the backlog")
    child = service_child(stack, "bench-service-1", "service-1", args.batch_max_records)
    with bench.running(child):
        profile_path = stack.work / "service.pyspy.txt"
        spy = attach_py_spy(child.pid, profile_path, args.profile_seconds) if args.profile else None
        result = await watch(stack, "bench-service-1", [child], "service x1", limit_s=bench.timeout)
        row = asdict(result)
        row["students_with_held_results"] = await count_held(stack.redis_url)
        row["redis_bytes_per_student_after_backlog"] = (
            await redis_used_memory(stack.redis_url) - memory_before
        ) / bench.students
        if spy is not None:
            spy.wait()
            if profile_path.exists():
                RESULTS_DIR.mkdir(parents=True, exist_ok=True)
                shutil.copy(profile_path, RESULTS_DIR / "service-pyspy-collapsed.txt")
                bench.results["profile_top"] = summarize_collapsed(profile_path)
    bench.results["throughput"]["service"] = row
    say(f"service x1: {result.events_per_s:,.0f} events/s over {result.seconds:.1f}s")
    return result


async def reference_phase(
    bench: Bench, kind: str, out: str, name: str, *, window: float | None = None
) -> RunResult:
    """One reference consumer over the backlog, in its own group."""
    group = f"bench-{kind}"
    max_records = 50 if kind == "naive" else tree_batch(bench.args)
    say(f"{kind}: {name}" + (f" for {window}s" if window else ""))
    with bench.running(reference_child(bench.stack, kind, group, out, max_records)) as children:
        # the librdkafka pass-through drains a quick backlog in well under a second
        poll_s = 0.01 if kind == "librdkafka" else 0.05
        result = await watch(
            bench.stack, group, children, name, limit_s=bench.timeout, window=window, poll_s=poll_s
        )
    say(f"{kind}: {result.events_per_s:,.0f} events/s")
    return result


async def references_phase(bench: Bench) -> None:
    """The naive handler (a time window: it is far too slow to drain the backlog), then the
    aiokafka and librdkafka pass-throughs."""
    throughput = bench.results["throughput"]
    await flush(bench.stack.redis_url)
    naive_window = bench.args.naive_seconds or (5 if bench.quick else 20)
    naive = await reference_phase(
        bench, "naive", NAIVE_OUT, "naive per-message", window=naive_window
    )
    throughput["naive"] = asdict(naive)
    ceiling = await reference_phase(bench, "ceiling", CEILING_OUT, "ceiling: aiokafka pass-through")
    throughput["ceiling"] = asdict(ceiling)
    fastest = await reference_phase(
        bench, "librdkafka", LIBRDKAFKA_OUT, "ceiling: librdkafka pass-through"
    )
    throughput["ceiling_librdkafka"] = asdict(fastest)


async def scaling_phase(bench: Bench) -> None:
    """Two service instances in one group."""
    stack = bench.stack
    await flush(stack.redis_url)
    say("service x2: two instances in one group")
    pair = [
        service_child(stack, "bench-service-2", f"service-2{n}", bench.args.batch_max_records)
        for n in "ab"
    ]
    with bench.running(*pair):
        two = await watch(stack, "bench-service-2", pair, "service x2", limit_s=bench.timeout)
    bench.results["throughput"]["service_2_instances"] = asdict(two)
    say(f"service x2: {two.events_per_s:,.0f} events/s")


async def redis_limit_phase(bench: Bench, load: Load) -> None:
    students = min(bench.students, REPLAY_STUDENTS_MAX)
    records = first_students(load.records, students)
    say(f"redis limit: capturing the service's scripts on {len(records):,} events, replaying")
    figures = await redis_limit(
        bench.in_process_redis,
        records,
        tree_batch(bench.args),
        bench.stack.work,
        REDIS_ARGS,
    )
    figures["students"] = students
    bench.results["redis_limit"] = figures
    say(f"redis limit: {figures['replay']['events_per_s']:,.0f} events/s")


async def compare_phase(bench: Bench) -> None:
    """The service of --baseline against this tree's, alternated over the same backlog."""
    args = bench.args
    say(f"compare: {args.baseline} against this tree, {args.rounds} rounds")
    figures = await compare_runs(
        bench.stack,
        args.baseline,
        args.rounds,
        args.batch_max_records,
        bench.timeout,
        bench.running,
        instances=args.compare_instances,
    )
    bench.results["comparison"] = figures
    say(
        f"compare: events/s x{figures['ratio_events_per_s']:.2f},"
        f" service CPU per event x{figures['ratio_service_cpu_us_per_event']:.2f}"
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    students = args.students or (2000 if args.quick else 20_000)
    work = Path(tempfile.mkdtemp(prefix="la-bench-"))
    say(f"work dir {work}")
    servers: list[LocalProcess] = []
    bench: Bench | None = None
    try:
        stack, in_process_redis = await start_servers(work, servers)
        bench = Bench(args, students, stack, in_process_redis, describe(args, students))
        bench.results["throughput"] = {}
        if args.only_compare:
            await load_phase(bench)
            await compare_phase(bench)
            return bench.results
        await in_process_phase(bench)
        await latency_phase(bench)
        load = await load_phase(bench)
        await service_phase(bench)
        await references_phase(bench)
        if not args.skip_scaling:
            await scaling_phase(bench)
        await redis_limit_phase(bench, load)
        if args.baseline is not None:
            await compare_phase(bench)
        summarize(bench.results, bench.stack.total)
        return bench.results
    finally:
        for child in bench.children if bench is not None else ():
            child.stop(timeout=10)
        for server in reversed(servers):
            server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"kept {work}")


def tree_batch(args: argparse.Namespace) -> int:
    """Records per batch for what runs this tree's code outside its service (the pass-throughs,
    the in-process phases): `--batch-max-records`, else the service's default."""
    given: int | None = args.batch_max_records
    return given if given is not None else DEFAULT_BATCH_MAX_RECORDS


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="learning-account end-to-end benchmark")
    parser.add_argument("--students", type=int, default=None, help="default 20,000 (quick 2,000)")
    parser.add_argument("--quick", action="store_true", help="small CI smoke run")
    parser.add_argument("--rate", type=int, default=2000, help="paced rate for the latency run")
    parser.add_argument("--latency-seconds", type=float, default=None)
    parser.add_argument("--naive-seconds", type=float, default=None)
    parser.add_argument("--memory-students", type=int, default=None)
    parser.add_argument(
        "--batch-max-records",
        type=int,
        default=None,
        help="records per batch; default: each service its own (LA_BATCH_MAX_RECORDS's default),"
        " the pass-throughs and in-process phases this tree's",
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="limit per consumer run (900 s; quick 120 s)"
    )
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument(
        "--baseline", type=Path, default=None, help="another checkout whose service to compare"
    )
    parser.add_argument("--rounds", type=int, default=3, help="baseline/current pairs (3)")
    parser.add_argument("--only-compare", action="store_true", help="load, then compare only")
    parser.add_argument(
        "--compare-instances",
        type=lambda text: tuple(int(part) for part in text.split(",")),
        default=(1,),
        help="instance counts each compare round runs (1; e.g. 1,2)",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the service x1 run")
    parser.add_argument("--profile-seconds", type=float, default=30)
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "latest.json")
    return parser.parse_args(argv)


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # runs the cleanup of every started process


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    # the in-process figures run the Processor as the service does, GC tuning included; it
    # also keeps this process (load generator, latency reader) from stealing CPU in collections
    tune_gc(Settings.from_env().gc_threshold)
    started = time.perf_counter()
    results = asyncio.run(run(args))
    results["bench_seconds"] = time.perf_counter() - started
    table = render_comparison(results["comparison"]) if args.only_compare else render(results)
    if "comparison" in results and not args.only_compare:
        table += "\n\n" + render_comparison(results["comparison"])
    results["table_markdown"] = table
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(table)
    say(f"wrote {args.output} in {results['bench_seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
