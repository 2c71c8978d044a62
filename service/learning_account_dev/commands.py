"""`learning-account dev` and `learning-account demo`, registered through the entry points of
`learning_account.commands` (pyproject.toml), so the runtime CLI never imports the dev tools.

* ``dev``: start Tansu and Redis where none is reachable, create the topics, then serve.
* ``demo``: send Mary's and Thomas's tracks through the real topics and print their statements;
  with no service answering it starts the dev stack and the service itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from learning_account.entrypoints.cli import serve
from learning_account.entrypoints.command_plugins import Command
from learning_account.runtime import run as run_async
from learning_account.settings import Settings, reveal
from learning_account.wire import (
    BALANCE_CHANGED_TOPIC,
    INPUT_TOPICS,
    OUTPUT_TOPICS,
    REJECTIONS_TOPIC,
    STRUCTURED_HEADERS,
)
from learning_account_dev import events as ev
from learning_account_dev.devstack import DevStack

log = logging.getLogger("learning_account.cli")

DEV_TOPIC_PARTITIONS = 3


def dev_topics() -> dict[str, int]:
    from learning_account.ops.restore import SNAPSHOT_TOPICS

    topics = (*INPUT_TOPICS, *OUTPUT_TOPICS, *SNAPSHOT_TOPICS)
    return {topic: DEV_TOPIC_PARTITIONS for topic in topics}


# --- dev ----------------------------------------------------------------------------------


async def dev(settings: Settings, state_dir: Path) -> None:
    """Start Tansu and Redis where none is reachable, create the topics, then serve."""
    async with dev_stack(settings, state_dir) as stack:
        if stack.started:
            log.info("dev stack started: %s", ", ".join(stack.started))
        await serve(settings)


def dev_stack(settings: Settings, state_dir: Path) -> DevStack:
    """The dev stack of the settings' Kafka and Redis, its admin clients from the factory."""
    from learning_account.bootstrap import kafka_admin

    return DevStack(
        settings.kafka_bootstrap_servers,
        settings.redis_url,
        state_dir=state_dir,
        topics=dev_topics(),
        kafka_admin=lambda: kafka_admin(settings),
    )


# --- demo ---------------------------------------------------------------------------------


def _http_json(url: str, timeout: float = 2.0, token: str = "") -> Any:
    request = urllib.request.Request(url)
    if token:  # the static token of LA_HTTP_TOKEN reads every account
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def _service_is_up(settings: Settings) -> bool:
    try:
        _http_json(f"http://{settings.http_host}:{settings.http_port}/health/live", timeout=1)
    except (OSError, urllib.error.URLError, ValueError):
        return False
    return True


def demo_events() -> list[dict[str, Any]]:
    """Mary's and Thomas's tracks with fixed event ids: a second run is absorbed as duplicates."""
    tracks = ev.mary_track("mary") + ev.thomas_track("thomas")
    for number, event in enumerate(tracks):
        event["source"] = "urn:learning-account:demo"
        event["id"] = f"demo-{event['subject']}-{number:03d}"
    return tracks


async def send_events(settings: Settings, events: Sequence[dict[str, Any]]) -> None:
    from learning_account.adapters.clients import deliver
    from learning_account.bootstrap import kafka_producer

    producer = kafka_producer(settings, config={"linger.ms": 5})
    headers = list(STRUCTURED_HEADERS)
    await deliver(
        producer,
        [
            (ev.topic_of(e), e["data"]["student_id"].encode(), ev.to_bytes(e), headers)
            for e in events
        ],
    )


class DemoError(RuntimeError):
    """The demo's events were refused or not answered: the message says what to do."""


async def wait_for_outputs(settings: Settings, caused_by_ids: set[str], within: float) -> None:
    """Read balance-changed and rejections until all given ids caused a balance change."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    from learning_account.bootstrap import kafka_consumer
    from learning_account.ops.reading import close, partitions_of

    consumer = kafka_consumer(settings)
    loop = asyncio.get_running_loop()
    missing = set(caused_by_ids)
    refused: dict[str, str] = {}
    deadline = time.monotonic() + within
    try:
        partitions = await partitions_of(consumer, [BALANCE_CHANGED_TOPIC, REJECTIONS_TOPIC])
        consumer.assign(
            [TopicPartition(p.topic, p.partition, OFFSET_BEGINNING) for p in partitions]
        )
        while missing and not refused and time.monotonic() < deadline:
            for record in await loop.run_in_executor(None, consumer.consume, 500, 0.5):
                if record.error() is not None:
                    continue  # what librdkafka reports and retries itself
                data = json.loads(record.value() or b"")["data"]
                cause = data["caused_by"]["id"]
                if record.topic() == REJECTIONS_TOPIC and cause in missing:
                    refused[cause] = f"{data['reason']}: {data['detail']}"
                missing.discard(cause)
    finally:
        await close(consumer)
    if refused:
        first = next(iter(refused.items()))
        raise DemoError(
            f"the service refused demo event {first[0]} ({first[1]}). The Redis at LA_REDIS_URL"
            " holds other accounts named mary or thomas: point LA_REDIS_URL at an empty database"
            " (e.g. redis://127.0.0.1:6379/9) and run the demo again."
        )
    if missing:
        raise DemoError(
            f"no balance change seen for {len(missing)} demo events within {within:.0f}s;"
            " is the service consuming? (learning-account dev shows its log)"
        )


def print_statement(settings: Settings, student_id: str) -> None:
    from learning_account.domain.numbers import to_quarters
    from learning_account.domain.statement import StatementRow
    from learning_account.entrypoints.tables import render_statement_text

    base = f"http://{settings.http_host}:{settings.http_port}"
    document = _http_json(
        f"{base}/accounts/{student_id}/statement", token=reveal(settings.http_token)
    )
    rows = [
        StatementRow(
            academic_year=int(row["academic_year"][:4]),
            **{
                name: to_quarters(row[name])
                for name in (
                    "start",
                    "invested",
                    "acquired",
                    "bonus",
                    "refunded",
                    "restored",
                    "degree_deduction",
                    "rebuilt",
                    "balance",
                )
            },
            projected=row["projected"],
        )
        for row in document["years"]
    ]
    print(render_statement_text(student_id, rows, color=sys.stdout.isatty()))


async def demo(settings: Settings, state_dir: Path, keep_running: bool) -> None:
    """Send Mary's and Thomas's tracks through the real topics and print their statements."""
    stack = None
    service = None
    if not _service_is_up(settings):
        from learning_account.bootstrap import build_service

        print("No service answering: starting the dev stack (Tansu + Redis) and the service.")
        stack = await dev_stack(settings, state_dir).astart()
        service = build_service(settings)
        await service.start()
    try:
        events = demo_events()
        print(
            f"Sending {len(events)} events for mary and thomas, year by year,"
            f" to {settings.kafka_bootstrap_servers}"
        )
        for round_events in ev.rounds_by_year(events):
            await send_events(settings, round_events)
            expected = {e["id"] for e in round_events if ev.expects_balance_change(e)}
            await wait_for_outputs(settings, expected, within=60)
        for student in ("mary", "thomas"):
            print()
            await asyncio.to_thread(print_statement, settings, student)
        base = f"http://{settings.http_host}:{settings.http_port}"
        if service is None or keep_running:
            print(f"\nTry: curl {base}/accounts/mary   curl {base}/accounts/thomas/statement")
        if keep_running and service is not None:
            print("The service keeps running; Ctrl-C stops it.")
            await asyncio.Event().wait()
    finally:
        if service is not None:
            await service.stop()
        if stack is not None:
            await stack.astop()


# --- the commands -------------------------------------------------------------------------


def _add_state_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", type=Path, default=Path(".devstack"))


def _add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    _add_state_dir(parser)
    parser.add_argument("--keep-running", action="store_true")


def _run_dev(settings: Settings, args: argparse.Namespace) -> int:
    run_async(dev(settings, args.state_dir))
    return 0


def _run_demo(settings: Settings, args: argparse.Namespace) -> int:
    logging.getLogger().setLevel(logging.WARNING)
    try:
        run_async(demo(settings, args.state_dir, args.keep_running))
    except DemoError as error:
        print(f"demo: {error}", file=sys.stderr)
        return 1
    return 0


DEV = Command(
    help="start a local broker and Redis if needed, then serve",
    run=_run_dev,
    add_arguments=_add_state_dir,
    json_logs=True,
)
DEMO = Command(
    help="send Mary's and Thomas's tracks, print statements",
    run=_run_demo,
    add_arguments=_add_demo_arguments,
)
