"""pyinstrument profile of Processor.process against a throwaway redis-server (no Kafka).

    .venv/bin/python bench/profile_processor.py [--students 2000] [--history 500]

Part 1 profiles the backlog mix of bench/run.py (batches of 500 records). Part 2 profiles
batches at a long history (every student at event number --history) to show what grows.
The text reports go to stdout and to bench/results/profile-*.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

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


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--students", type=int, default=2000)
    parser.add_argument("--history", type=int, default=500)
    asyncio.run(main(parser.parse_args()))
