"""The operator commands as a user runs them: separate processes, configured by LA_* only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from redis.asyncio import Redis

from learning_account.adapters.redis_store import RedisStore
from learning_account.domain.model import Policy
from learning_account.processing.pipeline import InputRecord, Processor
from learning_account.wire import EXAM_RESULTS_TOPIC, REGISTRATIONS_TOPIC
from learning_account_dev import events as ev
from support import consume
from support.kafka import with_topics


def run_cli(*args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **{f"LA_{name}": value for name, value in settings.items()}}
    return subprocess.run(
        [sys.executable, "-m", "learning_account", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_send_publishes_each_line_as_written_keyed_by_student(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    registration = ev.registration("cli-send", 2016, {"A": 6})
    result = ev.exam_result("cli-send", 2016, "A")
    feed = tmp_path / "feed.jsonl"
    lines = [json.dumps(registration), "", json.dumps(result, indent=None)]
    feed.write_text("\n".join(lines) + "\n")
    # the topics first: a send to a topic not there yet makes Tansu create it with a partition
    # count of its own, and later tests on this broker would find the inputs not co-partitioned
    await with_topics(kafka_bootstrap)
    done = run_cli("send", str(feed), KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap)
    assert done.returncode == 0, done.stderr
    assert "sent 2 messages" in done.stdout
    records = await consume(
        kafka_bootstrap, [REGISTRATIONS_TOPIC, EXAM_RESULTS_TOPIC], 50, timeout=5
    )
    ours = [r for r in records if r.key == b"cli-send"]
    assert sorted(r.value for r in ours) == sorted(line.encode() for line in lines if line)


def test_send_refuses_a_line_without_a_known_type(tmp_path: Path) -> None:
    feed = tmp_path / "feed.jsonl"
    feed.write_text('{"type": "nope"}\n')
    done = run_cli("send", str(feed), KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1")
    assert done.returncode != 0
    assert "feed.jsonl:1" in done.stderr


async def test_statement_prints_the_seed_table_from_redis(redis_url: str) -> None:
    url = redis_url.rsplit("/", 1)[0] + "/3"
    redis = Redis.from_url(url)
    await redis.flushdb()
    events = ev.mary_track("cli-mary")
    await Processor(RedisStore(redis), Policy()).process(
        [InputRecord(ev.topic_of(e), 0, n, None, ev.to_bytes(e), n) for n, e in enumerate(events)]
    )
    await redis.aclose()
    done = run_cli("statement", "cli-mary", REDIS_URL=url)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split()[-3:] for line in done.stdout.splitlines() if line.strip()}
    assert rows["Start"] == ["140", "200", "200"]
    assert rows["Balance"] == ["200", "200", "200"]
    missing = run_cli("statement", "nobody", REDIS_URL=url)
    assert missing.returncode == 1 and "no learning account" in missing.stderr
