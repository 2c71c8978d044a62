"""Drive a workload through real service processes while breaking things, then check it all."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from redis.asyncio import Redis
from workload import Workload

from learning_account.adapters.redis_store import RedisStore
from learning_account.adapters.state_codec import encode_account
from learning_account.domain.model import Account
from learning_account.wire import DEAD_LETTER_TOPIC, OUTPUT_TOPICS
from support.kafka import consume_to_end, not_utf8_header_names

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@dataclass
class FaultReport:
    scenario: str
    events_sent: int = 0
    valid_events: int = 0
    duplicates_sent: int = 0
    bad_sent: int = 0
    applied: int = 0
    duplicate_outputs_absorbed: int = 0
    lost: int = 0
    doubled: int = 0
    state_mismatches: int = 0
    dead_letters: int = 0
    dead_letter_codes: dict[str, str] = field(default_factory=dict)
    """error_code of each dead letter, by record key."""
    recovery_seconds: list[float] = field(default_factory=list)
    total_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def write(self) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"faults-{self.scenario}.json"
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        print(json.dumps(asdict(self)))


class Feed:
    """Sends the workload phase by phase; a phase is done when the group committed all of it."""

    def __init__(
        self,
        bootstrap: str,
        group: str,
        workload: Workload,
        *,
        skew_ms: Mapping[str, int] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self.workload = workload
        self.skew_ms = dict(skew_ms or {})
        """Per topic: how far its producer's clock is off (its records' timestamps)."""
        self.ends: dict[TopicPartition, int] = {}
        self._probe: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> Feed:
        # a consumer of the group that never subscribes: it reads commits, never joins
        self._probe = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=self.group, enable_auto_commit=False
        )
        await self._probe.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._probe is not None:
            await self._probe.stop()

    async def committed(self) -> dict[TopicPartition, int]:
        assert self._probe is not None
        offsets: dict[TopicPartition, int] = {}
        for tp in list(self.ends):
            try:
                offset = await self._probe.committed(tp)
            except Exception:
                continue
            if offset is not None and offset >= 0:
                offsets[tp] = offset
        return offsets

    async def progress(self) -> float:
        committed = await self.committed()
        done = sum(min(committed.get(tp, 0), end) for tp, end in self.ends.items())
        total = sum(self.ends.values())
        return done / total if total else 1.0

    async def send_phase(self, index: int) -> None:
        phase = self.workload.phases[index]
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=False, linger_ms=5
        )
        await producer.start()
        try:
            skew = self.skew_ms.get(phase.topic)
            pending = [
                await producer.send(
                    phase.topic,
                    value,
                    key=key,
                    timestamp_ms=None if skew is None else round(time.time() * 1000) + skew,
                )
                for key, value in phase.records
            ]
            self._note_ends(await asyncio.gather(*pending))
        finally:
            await producer.stop()
        await self._send_hostile(index)

    def _note_ends(self, sent: list[Any]) -> None:
        for meta in sent:
            tp = TopicPartition(meta.topic, meta.partition)
            self.ends[tp] = max(self.ends.get(tp, 0), meta.offset + 1)

    async def _send_hostile(self, index: int) -> None:
        """Each codec's records through a producer of that codec, headers and stamps as given."""
        hostile = self.workload.phases[index].hostile
        for codec in dict.fromkeys(record.codec for record in hostile):
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                acks="all",
                enable_idempotence=False,
                linger_ms=20,
                compression_type=codec,
            )
            await producer.start()
            try:
                with not_utf8_header_names():
                    pending = [
                        await producer.send(
                            record.topic,
                            record.value,
                            key=record.key,
                            headers=record.headers or None,
                            timestamp_ms=record.timestamp_ms,
                        )
                        for record in hostile
                        if record.codec == codec
                    ]
                    self._note_ends(await asyncio.gather(*pending))
            finally:
                await producer.stop()

    async def wait_committed(self, timeout: float = 180) -> None:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while True:
            committed = await self.committed()
            if all(committed.get(tp, 0) >= end for tp, end in self.ends.items()):
                return
            if time.monotonic() > deadline:
                behind = {
                    f"{tp.topic}/{tp.partition}": (committed.get(tp, 0), end)
                    for tp, end in self.ends.items()
                    if committed.get(tp, 0) < end
                }
                raise TimeoutError(f"not committed within {timeout}s: {behind}")
            await asyncio.sleep(0.2)

    async def run(
        self,
        during: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        """Send every phase; `during(phase)` runs after the phase is sent, before waiting."""
        for index in range(len(self.workload.phases)):
            await self.send_phase(index)
            if during is not None:
                await during(index)
            await self.wait_committed()

    async def wait_for_advance(self, within: float = 60) -> float:
        """Seconds until the group commits anything new (the time a recovery takes)."""
        started = time.monotonic()
        before = await self.progress()
        while await self.progress() <= before and time.monotonic() - started < within:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        return round(time.monotonic() - started, 2)

    async def wait_progress(self, fraction: float, timeout: float = 60) -> float:  # noqa: ASYNC109
        """Wait until the group committed `fraction` of what was sent so far."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = await self.progress()
            if done >= fraction:
                return done
            await asyncio.sleep(0.02)
        return await self.progress()


async def verify(
    report: FaultReport, workload: Workload, bootstrap: str, redis_url: str
) -> FaultReport:
    """Compare every account with the oracle and every output with the expected set."""
    report.events_sent = workload.sent
    report.valid_events = workload.valid_events
    report.duplicates_sent = workload.duplicates
    report.bad_sent = len(workload.bad)

    actual_accounts = await stored_accounts(redis_url, workload.students)
    for sid, actual in zip(workload.students, actual_accounts, strict=True):
        if differs(workload.accounts.get(sid), actual):
            report.state_mismatches += 1
            if len(report.notes) < 5:
                report.notes.append(f"state of {sid} differs from the oracle")

    records = await consume_to_end(bootstrap, list(OUTPUT_TOPICS), timeout=60)
    by_id: dict[str, list[bytes]] = defaultdict(list)
    letters: list[dict[str, Any]] = []
    for record in records:
        document = json.loads(record.value)
        if record.topic == DEAD_LETTER_TOPIC:
            if document["data"]["topic"] in {p.topic for p in workload.phases}:
                letters.append(document)
                key = document["data"].get("key")
                if key is not None:
                    report.dead_letter_codes[key] = document["data"].get("error_code", "")
            continue
        by_id[document["id"]].append(record.value)
    ours = {i: v for i, v in by_id.items() if i in workload.expected_outputs}
    report.applied = workload.valid_events
    report.lost = sum(1 for i in workload.expected_outputs if i not in ours)
    report.doubled = sum(1 for values in ours.values() if len(set(values)) > 1)
    report.duplicate_outputs_absorbed = sum(len(values) - 1 for values in ours.values())
    letter_payloads = {
        (d["data"]["topic"], d["data"].get("key"), d["data"]["payload"]) for d in letters
    }
    report.dead_letters = len({d["id"] for d in letters})
    expected_letters = {
        (topic, key.decode(), _payload_text(value)) for topic, key, value in workload.bad
    }
    missing_letters = expected_letters - letter_payloads
    if missing_letters or report.dead_letters != len(workload.bad):
        report.notes.append(
            f"dead letters: {report.dead_letters} distinct for {len(workload.bad)} bad sent,"
            f" {len(missing_letters)} missing"
        )
        report.lost += len(missing_letters)
    return report


async def stored_accounts(redis_url: str, students: Sequence[str]) -> list[Account | None]:
    """Each student's account as stored (with its course units), None where there is none."""
    redis = Redis.from_url(redis_url)
    try:
        store = RedisStore(redis)
        return [await store.get(sid, with_units=True) for sid in students]
    finally:
        await redis.aclose()


def differs(expected: Account | None, actual: Account | None) -> bool:
    """Whether a stored account is not the oracle's (the wall-clock times of holds aside)."""
    if expected is None or actual is None:
        return (expected is None) != (actual is None)
    return _comparable(encode_account(expected)) != _comparable(encode_account(actual))


def _payload_text(value: bytes) -> str:
    import base64

    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(value).decode()


def _comparable(document: dict[str, Any]) -> dict[str, Any]:
    document = dict(document)
    document.pop("h", None)  # held results carry the wall-clock time they were held
    return document
