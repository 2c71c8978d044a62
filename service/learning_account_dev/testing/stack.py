""":class:`LearningAccountStack`: a broker, Redis and the service process, started together."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, Self, TypeVar

from learning_account.wire import INPUT_TOPICS, OUTPUT_TOPICS
from learning_account_dev.devstack import (
    DevStackError,
    LocalProcess,
    StartStop,
    ensure_topics,
    free_port,
    start_redis,
    start_tansu,
    wait_for_kafka,
)
from learning_account_dev.events import to_bytes, topic_of
from learning_account_dev.testing.backends import (
    DockerUnavailable,
    StackError,
    docker_available,
    kafka_container,
    redis_container,
    resolve_backend,
)
from learning_account_dev.testing.kafka import Message, OutputReader, Predicate, produce

TOPIC_PARTITIONS = 3

_T = TypeVar("_T")


def _run_sync(factory: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine to completion in a thread of its own (never disturbs a caller's loop)."""
    result: list[_T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(factory()))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="learning-account-testing", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


class LearningAccountStack(StartStop):
    """Kafka + Redis + the learning-account service process, started and stopped together.

    ``bootstrap_servers`` / ``redis_url`` given: that broker / Redis is used as is (nothing is
    started for it). Use as ``async with`` (or ``with``); ``start()`` / ``stop()`` are the
    synchronous forms.
    """

    def __init__(
        self,
        backend: str | None = None,
        *,
        bootstrap_servers: str | None = None,
        redis_url: str | None = None,
        service_env: Mapping[str, str] | None = None,
        work_dir: Path | str | None = None,
        startup_timeout: float = 120.0,
        keep_work_dir: bool | None = None,
    ) -> None:
        self._backend_arg = backend
        self.backend: str | None = None
        self._given_bootstrap = bootstrap_servers
        self._given_redis_url = redis_url
        self.service_env = {
            (name[3:] if name.startswith("LA_") else name): str(value)
            for name, value in (service_env or {}).items()
        }
        self.startup_timeout = startup_timeout
        self._own_work_dir = work_dir is None
        self.work_dir = Path(work_dir) if work_dir is not None else None
        if keep_work_dir is None:
            keep_work_dir = bool(os.environ.get("LA_TEST_KEEP_LOGS"))
        self.keep_work_dir = keep_work_dir
        self.consumer_group = f"la-testing-{uuid.uuid4().hex[:10]}"
        self.http_port = free_port()
        self._bootstrap: str | None = None
        self._redis_url: str | None = None
        self._cleanups: list[Callable[[], Any]] = []
        self._service: subprocess.Popen[bytes] | None = None
        self._service_log: Path | None = None
        self._outputs = OutputReader()

    # ------------------------------------------------------------------ addresses

    @property
    def bootstrap_servers(self) -> str:
        if self._bootstrap is None:
            raise StackError("the stack is not started")
        return self._bootstrap

    @property
    def redis_url(self) -> str:
        if self._redis_url is None:
            raise StackError("the stack is not started")
        return self._redis_url

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def service_log(self) -> Path | None:
        """The service process's log file (JSON lines)."""
        return self._service_log

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Start the broker, Redis and the service; return once the service is ready."""
        try:
            self.backend = resolve_backend(self._backend_arg)
            if self.work_dir is None:
                self.work_dir = Path(tempfile.mkdtemp(prefix="learning-account-"))
            self.work_dir.mkdir(parents=True, exist_ok=True)
            if self.backend == "testcontainers" and not (
                self._given_bootstrap and self._given_redis_url
            ):
                ok, reason = docker_available()
                if not ok:
                    raise DockerUnavailable(f"LA_TEST_BACKEND=testcontainers: {reason}")
            self._bootstrap = self._given_bootstrap or self._start_kafka()
            self._redis_url = self._given_redis_url or self._start_redis()
            bootstrap = self._bootstrap
            timeout = min(self.startup_timeout, 60.0)

            async def prepare() -> None:
                await wait_for_kafka(bootstrap, timeout=timeout)
                await ensure_topics(
                    bootstrap,
                    {topic: TOPIC_PARTITIONS for topic in (*INPUT_TOPICS, *OUTPUT_TOPICS)},
                    timeout=timeout,
                )

            _run_sync(prepare)
            self._start_service()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the service, then everything this stack started (in reverse order)."""
        service, self._service = self._service, None
        if service is not None and service.poll() is None:
            service.terminate()
            try:
                service.wait(timeout=40)
            except subprocess.TimeoutExpired:
                service.kill()
                service.wait()
        while self._cleanups:
            cleanup = self._cleanups.pop()
            with contextlib.suppress(Exception):
                cleanup()
        if self._own_work_dir and self.work_dir is not None and not self.keep_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def _start_local(self, what: str, start: Callable[[int], LocalProcess]) -> int:
        """Start a local process on a free port, stopped with the stack; returns the port."""
        port = free_port()
        try:
            process = start(port)
        except DevStackError as exc:
            raise StackError(f"cannot start {what}: {exc}") from exc
        self._cleanups.append(process.stop)
        return port

    def _start_kafka(self) -> str:
        assert self.work_dir is not None
        if self.backend == "testcontainers":
            container = kafka_container()
            container.start(timeout=int(self.startup_timeout))
            self._cleanups.append(container.stop)
            return str(container.get_bootstrap_server())
        logs = self.work_dir / "logs"
        port = self._start_local("Tansu", lambda port: start_tansu(port, logs))
        return f"127.0.0.1:{port}"

    def _start_redis(self) -> str:
        assert self.work_dir is not None
        if self.backend == "testcontainers":
            container = redis_container()
            container.start()
            self._cleanups.append(container.stop)
            host = container.get_container_host_ip()
            return f"redis://{host}:{container.get_exposed_port(6379)}/0"
        work_dir = self.work_dir
        port = self._start_local(
            "redis-server",
            lambda port: start_redis(port, work_dir / "redis", log_dir=work_dir / "logs"),
        )
        return f"redis://127.0.0.1:{port}/0"

    def _start_service(self) -> None:
        assert self.work_dir is not None
        settings = {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "REDIS_URL": self.redis_url,
            "CONSUMER_GROUP": self.consumer_group,
            "LOG_LEVEL": "INFO",
            **self.service_env,
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": str(self.http_port),
        }
        env = {name: value for name, value in os.environ.items() if not name.startswith("LA_")}
        env.update({f"LA_{name}": value for name, value in settings.items()})
        self._service_log = self.work_dir / "logs" / f"service-{self.http_port}.log"
        self._service_log.parent.mkdir(parents=True, exist_ok=True)
        with self._service_log.open("ab") as log_file:
            self._service = subprocess.Popen(
                [sys.executable, "-m", "learning_account", "serve"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._service.poll() is not None:
                raise StackError(
                    f"the service exited with code {self._service.returncode} during startup:\n"
                    f"{self.service_log_tail()}"
                )
            status, _ = self._get("/health/ready")
            if status == 200:
                return
            if time.monotonic() >= deadline:
                raise StackError(
                    f"the service was not ready within {self.startup_timeout}s:\n"
                    f"{self.service_log_tail()}"
                )
            time.sleep(0.2)

    def service_log_tail(self, lines: int = 40) -> str:
        if self._service_log is None:
            return ""
        try:
            text = self._service_log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # ------------------------------------------------------------------ Kafka

    async def send(self, *events: Mapping[str, Any]) -> None:
        """Publish input CloudEvents (dicts) to their topic, keyed by ``data.student_id``."""
        await produce(
            self.bootstrap_servers,
            [
                (
                    topic_of(dict(event)),
                    str(event["data"]["student_id"]).encode(),
                    to_bytes(dict(event)),
                )
                for event in events
            ],
        )

    async def send_raw(self, topic: str, key: bytes | str | None, value: bytes | str) -> None:
        """Publish one record as is (bad input, foreign keys, ...)."""
        key_bytes = key.encode() if isinstance(key, str) else key
        value_bytes = value.encode() if isinstance(value, str) else value
        await produce(self.bootstrap_servers, [(topic, key_bytes, value_bytes)])

    async def wait_for(
        self,
        topic: str,
        predicate: Predicate | None = None,
        timeout: float = 30.0,  # noqa: ASYNC109 - a deadline for reading, not a cancel scope
        *,
        count: int = 1,
    ) -> list[Message]:
        """Output messages (decoded JSON) of ``topic`` matching ``predicate``, in fetch order.

        Reads the topic from its beginning (what earlier calls read is remembered), so it finds
        outputs published before the call. Returns every match seen once at least ``count``
        matched; raises ``TimeoutError`` after ``timeout`` seconds otherwise.
        """
        return await self._outputs.wait_for(
            self.bootstrap_servers, topic, predicate, timeout, count
        )

    # ------------------------------------------------------------------ HTTP

    async def account(self, student_id: str) -> Message | None:
        """``GET /accounts/{student_id}``; None when the student has no account (404)."""
        return await self._get_document(f"/accounts/{student_id}")

    async def statement(self, student_id: str) -> Message | None:
        """``GET /accounts/{student_id}/statement``; None when there is no account (404)."""
        return await self._get_document(f"/accounts/{student_id}/statement")

    async def get(self, path: str) -> tuple[int, Any]:
        """Any path of the HTTP API: ``(status, decoded JSON or text)``; status 0 if no answer."""
        return await asyncio.to_thread(self._get, path)

    async def _get_document(self, path: str) -> Message | None:
        status, body = await self.get(path)
        if status == 404:
            return None
        if status != 200 or not isinstance(body, dict):
            raise StackError(f"GET {path} answered {status}: {body!r}")
        return body

    def _get(self, path: str) -> tuple[int, Any]:
        request = urllib.request.Request(self.http_url + path)
        token = self.service_env.get("HTTP_TOKEN")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read()
        except (OSError, urllib.error.URLError):
            return 0, None
        try:
            return int(status), json.loads(body)
        except ValueError:
            return int(status), body.decode(errors="replace")
