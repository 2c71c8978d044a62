"""Each fault scenario gets its own broker, its own Redis (AOF) and its own workload run."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workload import Workload, generate

from learning_account.devstack import (
    LocalProcess,
    ensure_topics,
    free_port,
    start_tansu,
    wait_for_kafka,
)
from learning_account.wire import INPUT_TOPICS, OUTPUT_TOPICS
from support.redis import RestartableRedis
from support.service import ServiceProcess

STUDENTS = int(os.environ.get("LA_FAULT_STUDENTS", "800"))
GROUP = "faults"


@dataclass
class Stack:
    bootstrap: str
    port: int
    tansu: LocalProcess | None
    redis: RestartableRedis
    log_dir: Path

    def service(self, **settings: str) -> ServiceProcess:
        defaults = {"BATCH_MAX_RECORDS": "200", "GRACEFUL_TIMEOUT_SECONDS": "10"}
        return ServiceProcess(
            self.log_dir,
            KAFKA_BOOTSTRAP_SERVERS=self.bootstrap,
            REDIS_URL=self.redis.url,
            CONSUMER_GROUP=GROUP,
            **{**defaults, **settings},
        )

    async def start_broker(self) -> None:
        self.tansu = start_tansu(self.port, self.log_dir / "tansu")
        await wait_for_kafka(self.bootstrap, timeout=30)
        await ensure_topics(self.bootstrap, {t: 3 for t in (*INPUT_TOPICS, *OUTPUT_TOPICS)})


@pytest.fixture(scope="session")
def workload() -> Workload:
    return generate(STUDENTS)


@pytest.fixture(scope="session")
def hostile_workload() -> Workload:
    return generate(STUDENTS, hostile=True)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    port = free_port()
    redis = RestartableRedis(tmp_path / "redis")
    redis.start()
    result = Stack(f"127.0.0.1:{port}", port, None, redis, tmp_path / "logs")
    try:
        yield result
    finally:
        if result.tansu is not None:
            result.tansu.stop()
        redis.kill()


@pytest.fixture
async def started_stack(stack: Stack) -> Stack:
    await stack.start_broker()
    return stack
