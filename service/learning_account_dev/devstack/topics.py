"""Waiting for a broker and creating topics, with aiokafka's admin client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from learning_account_dev.devstack.processes import DevStackError

log = logging.getLogger(__name__)

AdminFactory = Callable[[], Any]
"""Makes an aiokafka admin client, not started (``clients.kafka_admin`` with the settings)."""

# Kafka error codes handled by ensure_topics.
_TOPIC_ALREADY_EXISTS = 36
_RETRIABLE_CREATE_ERRORS = frozenset({5, 7, 14, 15, 41})  # leader n/a, timeout, coord load, ...

_LOG_APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}


def _plain_admin(bootstrap: str) -> AdminFactory:
    """Admin clients of a broker without security (a local one)."""
    from aiokafka.admin import AIOKafkaAdminClient

    return lambda: AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)


@contextlib.asynccontextmanager
async def _started(new_admin: AdminFactory, deadline: float) -> AsyncIterator[Any]:
    """A new admin client, started before the deadline and always closed."""
    admin = new_admin()
    try:
        await asyncio.wait_for(admin.start(), timeout=max(0.5, deadline - time.monotonic()))
        yield admin
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


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
        try:
            async with _started(new_admin, deadline) as admin:
                await asyncio.wait_for(admin.list_topics(), timeout=5)
            return
        except Exception as exc:  # connection refused, bootstrap failure, timeout
            last_error = exc
        await asyncio.sleep(0.2)
    raise TimeoutError(f"Kafka at {bootstrap} not reachable within {timeout}s: {last_error!r}")


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
        try:
            async with _started(new_admin, deadline) as admin:
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
                        raise DevStackError(
                            f"creating topic {name!r} failed: error {code} {message}"
                        )
                if existing:
                    await _warn_partition_mismatch(admin, existing, topics)
        except DevStackError:
            raise
        except Exception as exc:
            last_error = exc
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
