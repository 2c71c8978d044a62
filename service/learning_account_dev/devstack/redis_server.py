"""``redis-server`` started locally: one server, or a Redis Cluster of one master per port."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from learning_account_dev.devstack.processes import DevStackError, LocalProcess


def redis_server_binary() -> Path:
    """Path of ``redis-server`` (``LA_REDIS_SERVER_BIN`` overrides the PATH lookup)."""
    override = os.environ.get("LA_REDIS_SERVER_BIN")
    found = override or shutil.which("redis-server")
    if not found:
        raise DevStackError(
            "redis-server not found on PATH (Debian/Ubuntu: apt-get install -y redis-server)"
        )
    return Path(found)


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
