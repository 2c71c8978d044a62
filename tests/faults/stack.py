"""The processes of one fault scenario: its own broker, its own Redis (AOF) and the services."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from learning_account.wire import INPUT_TOPICS, OUTPUT_TOPICS
from learning_account_dev.devstack import LocalProcess, ensure_topics, start_tansu, wait_for_kafka
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
