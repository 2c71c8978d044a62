"""The real service as a child process, and a collector of its output topics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from learning_account.settings import Settings
from learning_account.wire import OUTPUT_TOPICS
from learning_account_dev import events as ev
from learning_account_dev.devstack import free_port
from support.kafka import earliest_reader


def in_process_settings(bootstrap: str, redis_url: str, group: str, **overrides: Any) -> Settings:
    """Settings of a service run in a test's process: a single Redis, an HTTP port and a consumer
    group (`group` and a random suffix) of its own, a short graceful stop."""
    defaults: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap,
        "redis_url": redis_url,
        "redis_cluster": "false",
        "http_port": free_port(),
        "consumer_group": f"{group}-{uuid.uuid4().hex[:8]}",
        "graceful_timeout_seconds": 5,
    }
    return Settings(**{**defaults, **overrides})


class ServiceProcess:
    """`learning-account serve` in its own process, configured only by LA_* variables."""

    command: tuple[str, ...] = (sys.executable, "-m", "learning_account", "serve")

    def __init__(self, log_dir: Path, **settings: str) -> None:
        self.port = int(settings.pop("HTTP_PORT", None) or free_port())
        self.env = {
            **os.environ,
            **{f"LA_{name}": str(value) for name, value in settings.items()},
            "LA_HTTP_PORT": str(self.port),
            "LA_HTTP_HOST": "127.0.0.1",
        }
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"service-{self.port}-{self.starts}.log"

    def start(self, wait_ready: bool = True, timeout: float = 60) -> None:
        self.starts += 1
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            list(self.command),
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if wait_ready:
            self.wait_ready(timeout)

    @contextlib.contextmanager
    def running(self) -> Iterator[ServiceProcess]:
        """Started and ready inside the block, stopped (SIGTERM) on leaving it."""
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"service exited early:\n{self.log_tail()}")
            status, _ = self.get("/health/ready")
            if status == 200:
                return
            time.sleep(0.2)
        raise TimeoutError(f"service not ready in {timeout}s:\n{self.log_tail()}")

    def get(self, path: str) -> tuple[int, Any]:
        return self.request(path)

    def post(self, path: str, document: Any) -> tuple[int, Any]:
        """POST `document` as JSON: `(status, decoded JSON or text)`; status 0 if no answer."""
        return self.request(path, json.dumps(document).encode())

    def request(self, path: str, body: bytes | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.base_url + path, data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                body = response.read()
                status = response.status
        except urllib.error.HTTPError as error:
            body, status = error.read(), error.code
        except (OSError, urllib.error.URLError):
            return 0, None
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode(errors="replace")

    def stop(self, timeout: float = 40) -> int | None:
        """SIGTERM, then wait for the exit code (SIGKILL if it takes longer than `timeout`)."""
        if self.process is None:
            return None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None
        finally:
            self.process = None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class OutputCollector:
    """Reads every output topic from the start in the background; tests wait on predicates."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.records: list[tuple[str, bytes | None, bytes]] = []
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._consumer = earliest_reader(self.bootstrap, *OUTPUT_TOPICS, metadata_max_age_ms=1000)
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=100)
            for records in batch.values():
                self.records.extend((r.topic, r.key, r.value) for r in records)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    def messages(self, topic: str | None = None) -> list[dict[str, Any]]:
        return [
            json.loads(value) for t, _, value in list(self.records) if topic is None or t == topic
        ]

    def raw(self, topic: str) -> list[bytes]:
        return [value for t, _, value in list(self.records) if t == topic]

    def caused_by(self, event_id: str, topic: str | None = None) -> list[dict[str, Any]]:
        return [
            m
            for m in self.messages(topic)
            if m.get("data", {}).get("caused_by", {}).get("id") == event_id
        ]

    async def wait_for(
        self,
        predicate: Callable[[], bool],
        timeout: float = 30,  # noqa: ASYNC109 - a deadline for reading
        what: str = "outputs",
    ) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not seen within {timeout}s")
            await asyncio.sleep(0.05)


async def send(
    bootstrap: str, events: list[dict[str, Any] | tuple[str, bytes | None, bytes]]
) -> None:
    """Produce events (dicts to their topic keyed by student id, or raw (topic, key, value))."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        pending = []
        for event in events:
            if isinstance(event, tuple):
                topic, key, value = event
            else:
                topic, key, value = (
                    ev.topic_of(event),
                    event["data"]["student_id"].encode(),
                    ev.to_bytes(event),
                )
            pending.append(await producer.send(topic, value, key=key))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
