"""Each fault scenario gets its own broker, its own Redis (AOF) and its own workload run."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stack import STUDENTS, Stack
from workload import Workload, generate

from learning_account_dev.devstack import free_port
from support.redis import RestartableRedis


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
