"""Waiting for a broker and creating topics, with confluent-kafka's (librdkafka) admin client."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from learning_account_dev.devstack.processes import DevStackError

log = logging.getLogger(__name__)

AdminFactory = Callable[[], Any]
"""Makes a confluent-kafka admin client (``bootstrap.kafka_admin`` with the settings)."""

# Kafka error codes handled by ensure_topics.
_TOPIC_ALREADY_EXISTS = 36
_RETRIABLE_CREATE_ERRORS = frozenset({5, 7, 14, 15, 41})  # leader n/a, timeout, coord load, ...

_LOG_APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}


def _plain_admin(bootstrap: str) -> AdminFactory:
    """Admin clients of a broker without security (a local one)."""
    from confluent_kafka.admin import AdminClient

    return lambda: AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 5000})


def _left(deadline: float) -> float:
    return max(0.5, deadline - time.monotonic())


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
    admin = new_admin()
    while time.monotonic() < deadline:
        try:
            await asyncio.to_thread(admin.list_topics, timeout=min(5.0, _left(deadline)))
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
    from confluent_kafka import KafkaException
    from confluent_kafka.cimpl import NewTopic

    from learning_account.wire import INPUT_TOPICS

    if not topics:
        return
    new_admin = admin_factory or _plain_admin(bootstrap)
    deadline = time.monotonic() + timeout
    pending = dict(topics)
    last_error: BaseException | str | None = None
    admin = None
    while pending:
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"could not create topics {sorted(pending)} on {bootstrap} within {timeout}s: "
                f"{last_error!r}"
            )
        try:
            admin = admin or new_admin()
            futures = admin.create_topics(
                [
                    NewTopic(
                        name,
                        n,
                        replication_factor,
                        config=_LOG_APPEND_TIME if name in INPUT_TOPICS else {},
                    )
                    for name, n in pending.items()
                ],
                request_timeout=min(10.0, _left(deadline)),
            )
            existing: list[str] = []
            for name, future in futures.items():
                try:
                    await asyncio.wrap_future(future)
                except KafkaException as failure:
                    error = failure.args[0]
                    code = error.code()
                    if code == _TOPIC_ALREADY_EXISTS:
                        existing.append(name)
                        pending.pop(name, None)
                    elif code in _RETRIABLE_CREATE_ERRORS or error.retriable() or code < 0:
                        last_error = f"{name}: error {code} {error.str()}"  # < 0: librdkafka's
                    else:
                        raise DevStackError(
                            f"creating topic {name!r} failed: error {code} {error.str()}"
                        ) from None
                else:
                    pending.pop(name, None)
            if existing:
                await _warn_partition_mismatch(admin, existing, topics)
        except DevStackError:
            raise
        except Exception as exc:
            last_error = exc
        if pending:
            await asyncio.sleep(0.2)


async def _warn_partition_mismatch(admin: Any, names: list[str], wanted: Mapping[str, int]) -> None:
    try:
        cluster = await asyncio.to_thread(admin.list_topics, timeout=5)
    except Exception:
        return
    for name in names:
        metadata = cluster.topics.get(name)
        have = len(metadata.partitions) if metadata is not None else 0
        if have != wanted[name]:
            log.warning(
                "topic %s already exists with %d partitions (wanted %d)", name, have, wanted[name]
            )
