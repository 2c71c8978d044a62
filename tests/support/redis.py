"""A redis-server the test controls: stop/kill/start it on the same port with the same AOF."""

from __future__ import annotations

import asyncio
from pathlib import Path

from learning_account_dev.devstack import LocalProcess, free_port, start_redis

__all__ = ["RestartableRedis", "database_url"]


def database_url(redis_url: str, database: int) -> str:
    """The same Redis server as `redis_url`, another database of it."""
    return redis_url.rsplit("/", 1)[0] + f"/{database}"


class RestartableRedis:
    """Own redis-server (AOF on, ``appendfsync always``) on its own port and data dir."""

    def __init__(self, data_dir: Path, *, port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: LocalProcess | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.running

    def start(self) -> None:
        """Start (or restart) the server; returns once it answers PING (AOF loaded)."""
        if self._proc is None:
            self._proc = start_redis(
                self.port, self.data_dir, appendonly=True, appendfsync="always"
            )
        elif not self._proc.running:
            self._proc.start()

    def stop(self) -> None:
        """Graceful stop (SIGTERM; Redis fsyncs the AOF before exiting)."""
        if self._proc is not None:
            self._proc.stop()

    def kill(self) -> None:
        """Crash it (SIGKILL). With ``appendfsync always`` acknowledged writes survive."""
        if self._proc is not None:
            self._proc.kill()

    def restart(self, *, crash: bool = False) -> None:
        if crash:
            self.kill()
        else:
            self.stop()
        self.start()

    async def astart(self) -> None:
        await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    async def akill(self) -> None:
        await asyncio.to_thread(self.kill)

    async def arestart(self, *, crash: bool = False) -> None:
        await asyncio.to_thread(self.restart, crash=crash)

    def log_tail(self) -> str:
        return self._proc.log_tail() if self._proc is not None else ""
