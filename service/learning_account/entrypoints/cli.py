"""The `learning-account` console script: serve, dev, demo, statement, send, asyncapi."""

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
from typing import TYPE_CHECKING, Any

from learning_account.ops.redrive import add_arguments as add_redrive_arguments
from learning_account.processing.ordering import NotCoPartitioned
from learning_account.settings import Settings, SettingsError, reveal
from learning_account.wire import (
    BALANCE_CHANGED_TOPIC,
    INPUT_TOPICS,
    OUTPUT_TOPICS,
    REJECTIONS_TOPIC,
    STRUCTURED_HEADERS,
)
from learning_account_dev import events as ev

if TYPE_CHECKING:
    from learning_account.bootstrap import KafkaClients
    from learning_account_dev.devstack import DevStack

log = logging.getLogger("learning_account.cli")

DEV_TOPIC_PARTITIONS = 3


def dev_topics() -> dict[str, int]:
    from learning_account.ops.restore import SNAPSHOT_TOPICS

    topics = (*INPUT_TOPICS, *OUTPUT_TOPICS, *SNAPSHOT_TOPICS)
    return {topic: DEV_TOPIC_PARTITIONS for topic in topics}


# --- serve / dev --------------------------------------------------------------------------


async def serve(settings: Settings, kafka: KafkaClients | None = None) -> None:
    from learning_account.bootstrap import build_service

    await build_service(settings, kafka=kafka).run()


async def dev(settings: Settings, state_dir: Path) -> None:
    """Start Tansu and Redis where none is reachable, create the topics, then serve."""
    async with dev_stack(settings, state_dir) as stack:
        if stack.started:
            log.info("dev stack started: %s", ", ".join(stack.started))
        await serve(settings)


def dev_stack(settings: Settings, state_dir: Path) -> DevStack:
    """The dev stack of the settings' Kafka and Redis, its admin clients from the factory."""
    from learning_account.bootstrap import kafka_admin
    from learning_account_dev.devstack import DevStack

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
    from learning_account.bootstrap import kafka_producer

    producer = kafka_producer(settings, linger_ms=5)
    await producer.start()
    try:
        pending = [
            await producer.send(
                ev.topic_of(event),
                ev.to_bytes(event),
                key=event["data"]["student_id"].encode(),
                headers=list(STRUCTURED_HEADERS),
            )
            for event in events
        ]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


class DemoError(RuntimeError):
    """The demo's events were refused or not answered: the message says what to do."""


async def wait_for_outputs(settings: Settings, caused_by_ids: set[str], within: float) -> None:
    """Read balance-changed and rejections until all given ids caused a balance change."""
    from learning_account.bootstrap import kafka_consumer

    consumer = kafka_consumer(
        settings,
        BALANCE_CHANGED_TOPIC,
        REJECTIONS_TOPIC,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    missing = set(caused_by_ids)
    refused: dict[str, str] = {}
    deadline = time.monotonic() + within
    try:
        while missing and not refused and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    data = json.loads(record.value)["data"]
                    cause = data["caused_by"]["id"]
                    if record.topic == REJECTIONS_TOPIC and cause in missing:
                        refused[cause] = f"{data['reason']}: {data['detail']}"
                    missing.discard(cause)
    finally:
        await consumer.stop()
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
                name: round(row[name] * 4)
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


# --- statement / send / asyncapi ----------------------------------------------------------


async def statement_from_redis(settings: Settings, student_id: str) -> int:
    from learning_account.bootstrap import account_store, redis_for
    from learning_account.domain.clock import current_academic_year
    from learning_account.domain.statement import statement
    from learning_account.entrypoints.tables import render_statement_text

    redis = await redis_for(settings)
    try:
        account = await account_store(settings, redis).get(student_id)
    finally:
        await redis.aclose()
    if account is None or account.balance is None:
        print(f"{student_id}: no learning account", file=sys.stderr)
        return 1
    rows = statement(account, current_academic_year())
    print(render_statement_text(student_id, rows, color=sys.stdout.isatty()))
    return 0


async def rebuild_command(
    settings: Settings, redis_url: str | None, kafka: KafkaClients | None = None
) -> int:
    from rich.progress import Progress

    from learning_account.ops.rebuild import rebuild

    with Progress(transient=True) as bar:
        task = bar.add_task("rebuilding", total=None)
        report = await rebuild(
            settings,
            redis_url=redis_url,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            kafka=kafka,
        )
    print(json.dumps(report.__dict__))
    return 0


async def restore_command(
    settings: Settings, redis_url: str | None, kafka: KafkaClients | None = None
) -> int:
    from learning_account.ops.restore import restore

    report = await restore(settings, redis_url=redis_url, kafka=kafka)
    print(json.dumps(report.__dict__))
    return 0


def read_feed(path: Path, topic: str | None) -> list[tuple[str, bytes | None, bytes]]:
    """(topic, key, value) per non-empty line; the line's bytes are sent exactly as written."""
    from learning_account.wire import TYPE_TOPIC

    records: list[tuple[str, bytes | None, bytes]] = []
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        key: bytes | None = None
        target = topic
        try:
            document = json.loads(line)
        except ValueError:
            document = None
        if isinstance(document, dict):
            data = document.get("data")
            student = data.get("student_id") if isinstance(data, dict) else None
            student = student or document.get("subject")
            key = student.encode() if isinstance(student, str) else None
            target = target or TYPE_TOPIC.get(str(document.get("type")))
        if target is None:
            raise SystemExit(
                f"{path}:{number}: no topic for this line (unknown `type`): pass --topic"
            )
        records.append((target, key, line))
    return records


async def send_feed(
    settings: Settings,
    records: Sequence[tuple[str, bytes | None, bytes]],
    kafka: KafkaClients | None = None,
) -> None:
    from rich.progress import Progress

    from learning_account.bootstrap import kafka_producer

    producer = kafka_producer(settings, kafka=kafka, linger_ms=5)
    await producer.start()
    try:
        with Progress(transient=True) as bar:
            task = bar.add_task("sending", total=len(records))
            pending = []
            for topic, key, value in records:
                future = await producer.send(
                    topic, value, key=key, headers=list(STRUCTURED_HEADERS)
                )
                future.add_done_callback(lambda _: bar.advance(task))
                pending.append(future)
            await asyncio.gather(*pending)
    finally:
        await producer.stop()


def main(argv: Sequence[str] | None = None, *, kafka: KafkaClients | None = None) -> int:
    """Run one command; `kafka`: the Kafka client classes (`bootstrap.KafkaClients`), aiokafka's
    by default."""
    parser = argparse.ArgumentParser(prog="learning-account", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the consumer and the HTTP API until SIGTERM/SIGINT")
    dev_parser = sub.add_parser("dev", help="start a local broker and Redis if needed, then serve")
    demo_parser = sub.add_parser("demo", help="send Mary's and Thomas's tracks, print statements")
    for p in (dev_parser, demo_parser):
        p.add_argument("--state-dir", type=Path, default=Path(".devstack"))
    demo_parser.add_argument("--keep-running", action="store_true")
    statement_parser = sub.add_parser("statement", help="print a student's statement")
    statement_parser.add_argument("student_id")
    send_parser = sub.add_parser("send", help="publish the events of a JSON-lines file")
    send_parser.add_argument("file", type=Path)
    send_parser.add_argument("--topic", help="send every line to this topic (default: by type)")
    sub.add_parser("asyncapi", help="print the AsyncAPI document")
    rebuild_parser = sub.add_parser(
        "rebuild", help="rebuild all accounts from the input topics' history into Redis"
    )
    rebuild_parser.add_argument(
        "--redis-url", help="target Redis (default LA_REDIS_URL); should be empty"
    )
    restore_parser = sub.add_parser(
        "restore", help="write every account of the snapshot topics into an (empty) Redis"
    )
    restore_parser.add_argument(
        "--redis-url", help="target Redis (default LA_REDIS_URL); should be empty"
    )
    redrive_parser = sub.add_parser(
        "redrive", help="re-publish dead-lettered input messages to their topics after a fix"
    )
    add_redrive_arguments(redrive_parser)
    args = parser.parse_args(argv)

    try:
        settings = Settings.from_env()
    except SettingsError as error:
        # before anything connects: one line naming the variable, no traceback
        print(error, file=sys.stderr)
        return 2
    from learning_account.observability.logs import configure

    configure(settings.log_level, json_lines=args.command in ("serve", "dev"))
    if args.command == "demo":
        logging.getLogger().setLevel(logging.WARNING)

    try:
        if args.command == "serve":
            asyncio.run(serve(settings, kafka))
        elif args.command == "dev":
            asyncio.run(dev(settings, args.state_dir))
        elif args.command == "demo":
            asyncio.run(demo(settings, args.state_dir, args.keep_running))
        elif args.command == "statement":
            return asyncio.run(statement_from_redis(settings, args.student_id))
        elif args.command == "send":
            records = read_feed(args.file, args.topic)
            asyncio.run(send_feed(settings, records, kafka))
            print(f"sent {len(records)} messages")
        elif args.command == "redrive":
            from learning_account.ops.redrive import redrive_command

            return asyncio.run(redrive_command(settings, args, kafka))
        elif args.command == "rebuild":
            return asyncio.run(rebuild_command(settings, args.redis_url, kafka))
        elif args.command == "restore":
            return asyncio.run(restore_command(settings, args.redis_url, kafka))
        elif args.command == "asyncapi":
            from learning_account.bootstrap import asyncapi_document

            print(asyncapi_document(settings))
    except KeyboardInterrupt:
        return 130
    except NotCoPartitioned as error:
        print(error, file=sys.stderr)
        return 2
    except DemoError as error:
        print(f"demo: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
