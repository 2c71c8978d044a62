"""The `learning-account` console script: serve, statement, send, asyncapi, rebuild, restore and
redrive; the dev tools add dev and demo."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from learning_account.entrypoints.command_plugins import plugin_commands
from learning_account.ops.redrive import add_arguments as add_redrive_arguments
from learning_account.processing.ordering import NotCoPartitioned
from learning_account.runtime import run as run_async
from learning_account.settings import Settings, SettingsError
from learning_account.wire import STRUCTURED_HEADERS

if TYPE_CHECKING:
    from learning_account.bootstrap import KafkaClients


# --- serve --------------------------------------------------------------------------------


async def serve(settings: Settings, kafka: KafkaClients | None = None) -> None:
    from learning_account.bootstrap import build_service

    await build_service(settings, kafka=kafka).run()


# --- statement / send / asyncapi ----------------------------------------------------------


async def statement_from_redis(settings: Settings, student_id: str) -> int:
    from learning_account.adapters.clock import current_academic_year
    from learning_account.bootstrap import account_store, redis_for
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

    from learning_account.adapters.clients import deliver
    from learning_account.bootstrap import kafka_producer

    producer = kafka_producer(settings, kafka=kafka, config={"linger.ms": 5})
    headers = list(STRUCTURED_HEADERS)
    with Progress(transient=True) as bar:
        task = bar.add_task("sending", total=len(records))
        for start in range(0, len(records), SEND_CHUNK):
            chunk = records[start : start + SEND_CHUNK]
            await deliver(producer, ((topic, key, value, headers) for topic, key, value in chunk))
            bar.advance(task, len(chunk))


SEND_CHUNK = 1000
"""Records `send` produces before it waits for their acknowledgements (and shows progress)."""


def main(argv: Sequence[str] | None = None, *, kafka: KafkaClients | None = None) -> int:
    """Run one command; `kafka`: the Kafka client classes (`bootstrap.KafkaClients`),
    confluent-kafka's by default."""
    parser = argparse.ArgumentParser(prog="learning-account", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the consumer and the HTTP API until SIGTERM/SIGINT")
    plugins = plugin_commands()  # dev and demo, from the dev tools
    for name, command in plugins.items():
        command.add_arguments(sub.add_parser(name, help=command.help))
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

    plugin = plugins.get(args.command)
    configure(
        settings.log_level,
        json_lines=args.command == "serve" or (plugin is not None and plugin.json_logs),
    )

    try:
        if plugin is not None:
            return plugin.run(settings, args)
        if args.command == "serve":
            run_async(serve(settings, kafka))
        elif args.command == "statement":
            return run_async(statement_from_redis(settings, args.student_id))
        elif args.command == "send":
            records = read_feed(args.file, args.topic)
            run_async(send_feed(settings, records, kafka))
            print(f"sent {len(records)} messages")
        elif args.command == "redrive":
            from learning_account.ops.redrive import redrive_command

            return run_async(redrive_command(settings, args, kafka))
        elif args.command == "rebuild":
            return run_async(rebuild_command(settings, args.redis_url, kafka))
        elif args.command == "restore":
            return run_async(restore_command(settings, args.redis_url, kafka))
        elif args.command == "asyncapi":
            from learning_account.bootstrap import asyncapi_document

            print(asyncapi_document(settings))
    except KeyboardInterrupt:
        return 130
    except NotCoPartitioned as error:
        print(error, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
