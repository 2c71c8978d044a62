"""Ports and child processes of the dev stack: free ports, waiting for one, a logged process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self
from urllib.parse import urlsplit

log = logging.getLogger(__name__)


class DevStackError(RuntimeError):
    """A local service could not be found, started or reached."""


class StartStop:
    """``with`` and ``async with`` for what has a blocking ``start()`` and ``stop()``.

    The async form runs them in a thread, so a caller's event loop is never blocked.
    """

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> object:
        raise NotImplementedError

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


# --------------------------------------------------------------------------- processes


class LocalProcess(StartStop):
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
        return self if self.running else self.start()
