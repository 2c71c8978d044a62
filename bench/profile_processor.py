"""pyinstrument profile of Processor.process against a throwaway redis-server (no Kafka).

    .venv/bin/python bench/profile_processor.py [--students 2000] [--history 500]
    .venv/bin/python bench/profile_processor.py --timing 5 [--students 2000]

Part 1 profiles the backlog mix of bench/run.py (batches of 500 records). Part 2 profiles
batches at a long history (every student at event number --history) to show what grows.
The text reports go to stdout and to bench/results/profile-*.txt.

--timing N profiles nothing: it runs the backlog mix N times (Redis flushed before each) and
prints one JSON line: the process CPU time spent in Processor.process per input record, each
run's and their median, and which modules of the hot path are compiled (`LA_COMPILE`, setup.py).
With --parts it also times the calls of the hot path's parts from their (never compiled)
callers, per input record summed over the runs: decide, to_message, to_command, the state
codec's decode_account and encode_* (the thread CPU time of each call, a timer's overhead
included).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from common import RESULTS_DIR  # bench/ is sys.path[0]
from load import generate_load
from memory import Feeder, history_track
from pyinstrument import Profiler

from learning_account.adapters.redis_connect import redis_client
from learning_account.adapters.redis_store import RedisStore
from learning_account.processing.pipeline import Processor
from learning_account.settings import Settings
from learning_account.wire import INPUT_TOPICS
from learning_account_dev.devstack import free_port, start_redis


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="la-profile-"))
    port = free_port()
    server = start_redis(port, work / "redis")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    try:
        redis = redis_client(f"redis://127.0.0.1:{port}/0", cluster=False)
        processor = Processor(RedisStore(redis), Settings().policy)

        # 1. the backlog mix
        load = generate_load(args.students)
        from learning_account.processing.pipeline import InputRecord

        records = [
            InputRecord(topic, 0, n, key, value, 1_700_000_000_000 + n)
            for n, (topic, key, value) in enumerate(load.records)
            if topic in INPUT_TOPICS
        ]
        if args.timing:
            await timing(processor, redis, records, args.timing, parts=args.parts)
            await redis.aclose()
            return
        profiler = Profiler(interval=0.0005, async_mode="enabled")
        profiler.start()
        for start in range(0, len(records), 500):
            await processor.process(records[start : start + 500])
        profiler.stop()
        text = profiler.output_text(unicode=False, color=False, show_all=False)
        (RESULTS_DIR / "profile-backlog.txt").write_text(text)
        print(text)

        # 2. long history: build it unprofiled, then profile the last 11 positions
        await redis.flushall()
        feeder = Feeder()
        students = 20
        tracks = [history_track(f"h{n:04d}", args.history + 11) for n in range(students)]
        for position in range(args.history):
            await processor.process(feeder.records(t[position] for t in tracks))
        profiler = Profiler(interval=0.0005, async_mode="enabled")
        profiler.start()
        for position in range(args.history, args.history + 11):
            await processor.process(feeder.records(t[position] for t in tracks))
        profiler.stop()
        text = profiler.output_text(unicode=False, color=False, show_all=False)
        (RESULTS_DIR / "profile-history.txt").write_text(text)
        print(text)
        await redis.aclose()
    finally:
        server.stop()


async def timing(
    processor: Processor, redis: Any, records: list[Any], runs: int, *, parts: bool
) -> None:
    spent_in = time_parts() if parts else {}
    per_record = []
    for _ in range(runs):
        await redis.flushall()
        spent = 0.0
        for start in range(0, len(records), 500):
            batch = records[start : start + 500]
            began = time.process_time()
            await processor.process(batch)
            spent += time.process_time() - began
        per_record.append(spent / len(records) * 1e6)
    print(
        json.dumps(
            {
                "records": len(records),
                "us_per_record": [round(us, 2) for us in per_record],
                "median_us": round(statistics.median(per_record), 2),
                "compiled": compiled_modules(),
                "parts_us_per_record": {
                    name: round(ns / 1000 / (len(records) * runs), 2)
                    for name, ns in spent_in.items()
                },
            }
        )
    )


def time_parts() -> dict[str, int]:
    """Wrap the parts' names in the modules that call them; the wrappers add up nanoseconds."""
    from learning_account.adapters import redis_layout
    from learning_account.processing import pipeline

    spent_in: dict[str, int] = {}

    def timed(module: Any, name: str) -> None:
        function = getattr(module, name)
        spent_in[name] = 0

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            began = time.thread_time_ns()
            try:
                return function(*args, **kwargs)
            finally:
                spent_in[name] += time.thread_time_ns() - began

        setattr(module, name, wrapper)

    for name in ("decide", "to_message", "to_command"):
        timed(pipeline, name)
    for name in ("decode_account", "encode_units", "encode_years", "encode_core"):
        timed(redis_layout, name)
    return spent_in


def compiled_modules() -> list[str]:
    """The modules of the hot path imported from an extension module (not a .py file)."""
    names = [
        "learning_account.domain.rules",
        "learning_account.domain.step",
        "learning_account.domain.model",
        "learning_account.adapters.state_codec",
        "learning_account.processing.outputs",
        "learning_account.processing.commands",
        "learning_account.wire.fast",
    ]
    return [n for n in names if not str(importlib.import_module(n).__file__).endswith(".py")]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--students", type=int, default=2000)
    parser.add_argument("--history", type=int, default=500)
    parser.add_argument("--timing", type=int, default=0, metavar="N")
    parser.add_argument("--parts", action="store_true", help="with --timing: time the parts")
    asyncio.run(main(parser.parse_args()))
