"""The one place that wires the service: broker, subscriber, publishers, Redis, HTTP, sweeper.

Nothing connects at import time. `Service(settings)` builds everything; `run()` serves until
stopped. Delivery is at-least-once with effectively-once effects:

    fetch a batch -> hold it in the merge of its partition number (ordering.Merge)
                  -> the records the merges release, in record-time order per partition number
                  -> Processor (Redis: load, decide, atomic write per student)
                  -> publish every output, await all acks -> commit the applied records' offsets

Held records are not committed. A batch that fails anywhere is rewound (every partition number
in it drops its held records and seeks back to its first unapplied record) and retried with
backoff; nothing is committed past it. A re-delivered batch is absorbed by the idempotency
digests and re-publishes the stored outputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import signal
import sys
import time
from collections.abc import Generator, Mapping, Sequence
from typing import Any

import uvicorn
from aiokafka import ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError, KafkaError
from faststream import AckPolicy, FastStream
from faststream.kafka.annotations import KafkaMessage
from faststream.specification import AsyncAPI
from redis.asyncio import Redis, RedisCluster

from learning_account import __version__
from learning_account.adapters.clients import (
    create_broker,
    leave_group_if_first_generation,
    redis_for,
)
from learning_account.adapters.kafka_records import install_tolerant_reading, unreadable
from learning_account.adapters.redis_connect import redis_client
from learning_account.adapters.store import HELD_INDEX_KEY, AccountStore
from learning_account.entrypoints.access import JwtVerifier
from learning_account.entrypoints.asyncapi import complete as complete_asyncapi
from learning_account.entrypoints.http_api import create_http_app
from learning_account.observability.logs import configure
from learning_account.observability.metrics import Metrics
from learning_account.observability.tracing import create_tracer
from learning_account.processing.ordering import (
    LAGGING_WAIT_SECONDS,
    Merge,
    NotCoPartitioned,
    check_co_partitioned,
)
from learning_account.processing.outputs import OutputMessage
from learning_account.processing.pipeline import BatchReport, InputRecord, Processor
from learning_account.runtime import tune_gc
from learning_account.settings import Settings, SettingsError, reveal
from learning_account.wire import (
    BALANCE_CHANGED_TOPIC,
    CLOUDEVENTS_CONTENT_TYPE,
    CONTENT_TYPE_HEADER,
    CREDIT_EXHAUSTED_TOPIC,
    CREDIT_LOW_TOPIC,
    DEAD_LETTER_TOPIC,
    INPUT_TOPICS,
    REGISTRATIONS_TOPIC,
    REJECTIONS_TOPIC,
    STRUCTURED_HEADERS,
    BalanceChangedEvent,
    CreditExhaustedEvent,
    CreditLowEvent,
    DeadLetteredEvent,
    EventRejectedEvent,
    InputEvent,
)

log = logging.getLogger("learning_account")

# a failed batch is retried after 0.2 s, 0.4 s, … up to this: soon enough once Redis is back,
# rare enough that a batch that keeps failing costs next to nothing
MAX_RETRY_SECONDS = 5.0

OUTPUT_DOCS: dict[str, tuple[Any, str]] = {
    BALANCE_CHANGED_TOPIC: (BalanceChangedEvent, "An input event changed a balance"),
    CREDIT_EXHAUSTED_TOPIC: (CreditExhaustedEvent, "A balance went from above 0 to 0 or below"),
    CREDIT_LOW_TOPIC: (CreditLowEvent, "A balance went below a low-balance threshold"),
    REJECTIONS_TOPIC: (EventRejectedEvent, "A valid input event was refused by a rule"),
    DEAD_LETTER_TOPIC: (DeadLetteredEvent, "An input message could not be read or validated"),
}


async def _raw_records(message: Any) -> list[Any]:
    """Keep FastStream from decoding: the pipeline decodes, and dead-letters what it can't."""
    return []


def _readable_headers(record: ConsumerRecord[Any, Any]) -> ConsumerRecord[Any, Any]:
    """The record as FastStream's batch parser can take it: it decodes every header as UTF-8.

    A header with a null value, or a name or value that is not UTF-8, is left out of FastStream's
    view only; the record itself (`raw_message`) keeps every header.
    """
    headers = [(name, value) for name, value in record.headers if _is_text(name, value)]
    if len(headers) == len(record.headers):
        return record
    return dataclasses.replace(record, headers=headers)


def _is_text(name: str, value: bytes | None) -> bool:
    if value is None:
        return False
    try:
        name.encode()  # a name aiokafka could not decode arrives surrogate-escaped
        value.decode()
    except UnicodeError:
        return False
    return True


class Service:
    """The running service: one consumer group member, its HTTP API and its held-result sweeper."""

    def __init__(self, settings: Settings, *, metrics: Metrics | None = None) -> None:
        install_tolerant_reading()
        self.settings = settings
        self.metrics = metrics or Metrics()
        # the store and the HTTP app hold a client from the start; start() replaces it with
        # the one of redis_for, which asks the server when LA_REDIS_CLUSTER is auto
        self.redis: Redis | RedisCluster = redis_client(
            settings.redis_url, cluster=settings.redis_cluster == "true"
        )
        self.store = AccountStore(
            self.redis,
            outbox_retention_seconds=settings.outbox_retention_seconds,
            observe=lambda operation, seconds: self.metrics.redis_seconds.labels(
                operation=operation
            ).observe(seconds),
        )
        self.processor = Processor(
            self.store,
            settings.policy,
            tracer=create_tracer(settings.tracing),
            consumer_group=settings.consumer_group,
            max_message_bytes=settings.kafka_max_message_bytes,
            allowed_sources=settings.allowed_sources,
            snapshots=True,
        )
        self.broker = create_broker(settings)
        self.subscriber = self.broker.subscriber(
            *INPUT_TOPICS,
            group_id=settings.consumer_group,
            batch=True,
            max_records=settings.batch_max_records,
            batch_timeout_ms=settings.batch_timeout_ms,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            auto_offset_reset="earliest",
            # offsets are committed by hand, only after Redis and the output acks (below)
            ack_policy=AckPolicy.MANUAL,
            decoder=_raw_records,
            parser=self._parse_batch,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            # partition p of every input topic on one member: one student's events meet there
            partition_assignment_strategy=(RangePartitionAssignor,),
            listener=_DropMerges(self),
            title="learning-account-inputs",
            description=(
                "Registrations, exam results and degrees, deregistrations (CloudEvents 1.0, "
                "structured JSON, keyed by student id)."
            ),
        )
        self.subscriber(self._handle_batch)
        self.publishers = {
            topic: self.broker.publisher(topic, schema=schema, description=text, title=topic)
            for topic, (schema, text) in OUTPUT_DOCS.items()
        }
        self.http = create_http_app(
            self.store,
            ready=self.is_ready,
            metrics=self.metrics,
            token=reveal(settings.http_token) or None,
            jwt_verifier=JwtVerifier.from_settings(settings),
            asyncapi=self.asyncapi,
            policy=settings.policy,
        )
        self._stopping = False
        self._stop_requested = asyncio.Event()
        self._broker_started = False
        self._in_flight = asyncio.Lock()
        self._failures = 0
        self._stalled = False
        self._partitions: dict[TopicPartition, _Progress] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._merges: dict[int, Merge] = {}
        self._waiting: dict[int, float] = {}
        """Per partition number: since when (monotonic) its merge waits for a lagging topic."""
        self._tasks: list[asyncio.Task[Any]] = []
        self._server: uvicorn.Server | None = None

    # --- the consumer -------------------------------------------------------------------------

    async def _parse_batch(
        self, records: tuple[ConsumerRecord[Any, Any], ...], original: Any
    ) -> Any:
        """FastStream's batch parser on records it can take; a batch it fails on is rewound."""
        try:
            message = await original(
                tuple(_readable_headers(record) if record.headers else record for record in records)
            )
        except Exception as error:  # the handler is never called: rewind here, not skip
            await self._batch_failed(self.subscriber.consumer, records, error)
            raise
        message.raw_message = records
        return message

    async def _handle_batch(self, body: list[InputEvent], msg: KafkaMessage) -> None:
        records: tuple[ConsumerRecord[Any, Any], ...] = msg.raw_message
        consumer = msg.consumer
        if self._stopping:
            self._rewind(consumer, records)
            return
        async with self._in_flight:
            try:
                for record in records:
                    if (failure := unreadable(record)) is not None:
                        raise failure.error
            except Exception as error:  # rewound with what its partitions hold: read again
                await self._batch_failed(consumer, records, error)
                return
            clock_ms = round(time.time() * 1000)
            for record in records:
                merge = self._merges.setdefault(record.partition, Merge(record.partition))
                merge.add(_input_record(record), clock_ms)
            await self._apply_released(consumer)

    async def _apply_released(self, consumer: Any) -> None:
        """Apply what the merges release, publish, commit (the caller holds `_in_flight`)."""
        started = time.perf_counter()
        records = await self._release(consumer)
        if not records:
            return
        try:
            report = await self.processor.process(records)
            await self.publish([*report.outputs, *report.snapshots])
        except Exception as error:  # Redis or Kafka unavailable, or a bug: retry
            await self._batch_failed(consumer, records, error)
            return
        self._failures = 0
        await self._commit(consumer, records)
        self._observe(report, records, started)

    async def _release(self, consumer: Any) -> list[InputRecord]:
        """The records every merge may release now: it stops at a topic-partition it holds nothing
        of while that one is lagging (for LAGGING_WAIT_SECONDS at most)."""
        now = time.monotonic()
        released: list[InputRecord] = []
        for number, merge in self._merges.items():
            if not merge.holding():
                self._waiting.pop(number, None)
                continue
            since = self._waiting.get(number)
            waited_out = since is not None and now - since >= LAGGING_WAIT_SECONDS
            waiting_for: list[str] = []
            for topic in INPUT_TOPICS:
                # what the client fetched comes with a coming batch: it is always waited for
                if _prefetched(consumer, topic, number) or (
                    not waited_out and await _lagging(consumer, topic, number)
                ):
                    waiting_for.append(topic)
            released.extend(merge.release(waiting_for))
            if merge.holding():
                self._waiting.setdefault(number, now)
            else:
                self._waiting.pop(number, None)
        return released

    async def _release_waiting(self) -> None:
        """Apply what merges hold once what they wait for comes, or the wait runs out, even when
        no batch arrives meanwhile."""
        while not self._stopping:
            await asyncio.sleep(0.1)
            consumer = getattr(self.subscriber, "consumer", None)
            if consumer is None or self._failures or not self._waiting:
                continue  # a failing batch retries on its own, and its rewind dropped the merges
            async with self._in_flight:
                if not self._stopping:
                    await self._apply_released(consumer)

    def drop_merges(self, partitions: Sequence[TopicPartition]) -> None:
        """Forget what the merges of these partition numbers hold (revoked, or read again)."""
        for number in {partition.partition for partition in partitions}:
            self._merges.pop(number, None)
            self._waiting.pop(number, None)

    async def _batch_failed(
        self,
        consumer: Any,
        records: Sequence[ConsumerRecord[Any, Any] | InputRecord],
        error: BaseException,
    ) -> None:
        """Rewind the batch and wait, longer each time in a row (readiness fails meanwhile)."""
        self._failures += 1
        self.metrics.ready.set(0)
        delay = min(MAX_RETRY_SECONDS, 0.1 * 2 ** min(self._failures, 6))
        log.warning(
            "batch of %d records failed (%r); rewinding and retrying in %.1fs",
            len(records),
            error,
            delay,
        )
        self._rewind(consumer, records)
        with contextlib.suppress(TimeoutError):  # a stop ends the wait: the batch is rewound
            await asyncio.wait_for(self._stop_requested.wait(), delay)

    async def publish(self, messages: Sequence[OutputMessage]) -> None:
        """Send every output without waiting for each, then wait for all acknowledgements.

        One by one (not publish_batch) so each record goes to its key's partition, in order.
        The outputs are finished CloudEvents: they go straight to the broker's aiokafka
        producer (FastStream's publishers document them, in the AsyncAPI document).
        """
        producer = self._aiokafka_producer()
        if producer is not None:
            pending = [
                await producer.send(
                    message.topic, message.value, key=message.key, headers=list(STRUCTURED_HEADERS)
                )
                for message in messages
            ]
        else:
            pending = [
                await self.publishers[message.topic].publish(
                    message.value,
                    key=message.key,
                    headers={CONTENT_TYPE_HEADER: CLOUDEVENTS_CONTENT_TYPE},
                    no_confirm=True,
                )
                for message in messages
            ]
        if pending:
            await asyncio.gather(*pending)
        for message in messages:
            self.metrics.outputs_published.labels(topic=message.topic).inc()

    def _aiokafka_producer(self) -> Any:
        """The producer FastStream connected (a private path: None if a release moves it)."""
        config = getattr(self.broker, "config", None)
        state = getattr(getattr(config, "producer", None), "_producer", None)
        return getattr(state, "producer", None)

    async def _commit(self, consumer: Any, records: Sequence[InputRecord]) -> None:
        offsets: dict[TopicPartition, int] = {}
        for record in records:
            partition = TopicPartition(record.topic, record.partition)
            offsets[partition] = max(offsets.get(partition, 0), record.offset + 1)
        try:
            await consumer.commit(offsets)
            self._committed.update(offsets)
        except (CommitFailedError, KafkaError) as error:
            # partitions moved during a rebalance: their new owner re-reads and dedupes
            log.warning("offset commit failed (%r); the records will be re-delivered", error)

    def _rewind(
        self, consumer: Any, records: Sequence[ConsumerRecord[Any, Any] | InputRecord]
    ) -> None:
        """Seek every partition number of the records back to its first unapplied record."""
        unapplied = list(records)
        for number in {record.partition for record in records}:
            merge = self._merges.pop(number, None)
            self._waiting.pop(number, None)
            if merge is not None:
                unapplied.extend(merge.drop())
        first: dict[TopicPartition, int] = {}
        for record in unapplied:
            partition = TopicPartition(record.topic, record.partition)
            first[partition] = min(first.get(partition, record.offset), record.offset)
        for partition, offset in first.items():
            try:
                consumer.seek(partition, offset)
            except Exception as error:  # no longer assigned: the new owner reads it
                log.info("cannot rewind %s (%r)", partition, error)

    def _observe(self, report: BatchReport, records: Sequence[InputRecord], started: float) -> None:
        metrics = self.metrics
        if not self._stalled:
            metrics.ready.set(1)
        metrics.batches.inc()
        metrics.batch_seconds.observe(time.perf_counter() - started)
        for kind, count in report.applied.items():
            metrics.events_applied.labels(type=kind).inc(count)
        for reason, count in report.rejected.items():
            metrics.events_rejected.labels(reason=reason).inc(count)
        metrics.dead_letters.inc(report.dead_lettered)
        metrics.duplicates.inc(report.duplicates)
        now_ms = time.time() * 1000
        for record in records:
            if record.timestamp_ms and record.timestamp_ms > 0:
                latency = (now_ms - record.timestamp_ms) / 1000
                metrics.event_latency_seconds.observe(max(0.0, latency))
        log.info(
            "batch applied",
            extra={
                "records": len(records),
                "applied": sum(report.applied.values()),
                "duplicates": report.duplicates,
                "dead_lettered": report.dead_lettered,
                "rejected": sum(report.rejected.values()),
                "outputs": len(report.outputs),
                "conflicts": report.conflicts,
                "seconds": round(time.perf_counter() - started, 4),
            },
        )

    # --- progress and lag -----------------------------------------------------------------------

    async def _watch_partitions(self) -> None:
        """Lag of every assigned partition, and whether one with records to read is stuck."""
        interval = min(5.0, self.settings.stall_seconds / 4)
        while not self._stopping:
            consumer = getattr(self.subscriber, "consumer", None)
            if consumer is not None:
                try:
                    await self._check_partitions(consumer, time.monotonic())
                except Exception as error:
                    log.info("partition check failed (%r)", error)
            await asyncio.sleep(interval)

    async def _check_partitions(self, consumer: Any, now: float) -> None:
        assigned = set(consumer.assignment())
        for partition in set(self._partitions) - assigned:  # revoked: its new owner reports it
            del self._partitions[partition]
            self._committed.pop(partition, None)
            with contextlib.suppress(KeyError):
                self.metrics.consumer_lag.remove(partition.topic, str(partition.partition))
        stalled = []
        # no batch in flight or failing: the consumer's position counts too, as it passes the
        # control records of transactions, which no batch ever commits
        idle = not self._in_flight.locked() and not self._failures
        for partition in assigned:
            merge = self._merges.get(partition.partition)
            held = merge is not None and merge.holds(partition.topic)
            progress = self._partitions.get(partition)
            if progress is None:  # newly assigned: where the group stands on it
                committed = await asyncio.wait_for(consumer.committed(partition), timeout=5)
                if committed is not None and committed >= 0:
                    self._committed.setdefault(partition, committed)
                progress = self._partitions[partition] = _Progress(None, now)
            highwater = consumer.highwater(partition)
            if highwater is None:
                continue  # not fetched yet
            done = self._committed.get(partition)
            if idle and not held:  # a held record is read, not yet applied
                position = await asyncio.wait_for(consumer.position(partition), timeout=1)
                done = max(done or 0, position)
            lag = max(0, highwater - (done or 0))
            self.metrics.consumer_lag.labels(
                topic=partition.topic, partition=str(partition.partition)
            ).set(lag)
            if lag == 0 or done != progress.offset:
                progress.offset, progress.since = done, now
            elif now - progress.since >= self.settings.stall_seconds:
                stalled.append(partition)
        if stalled and not self._stalled:
            log.warning(
                "no progress for %.0fs on %s",
                self.settings.stall_seconds,
                ", ".join(f"{p.topic}[{p.partition}]" for p in sorted(stalled)),
            )
        self._stalled = bool(stalled)
        if self._broker_started and not self._stopping:
            self.metrics.ready.set(0 if self._stalled or self._failures else 1)

    # --- held exam results --------------------------------------------------------------------

    async def _sweep_held_results(self) -> None:
        interval = self.settings.held_sweep_interval_seconds
        while not self._stopping:
            try:
                refused = 0
                consumer = getattr(self.subscriber, "consumer", None)
                # under the batch lock: a released record is applied before its time counts, and
                # snapshots of one student go out in commit order
                async with self._in_flight:
                    cutoffs = {} if consumer is None else await self._held_cutoffs(consumer)
                    if cutoffs and not self._stopping:
                        refused = await self.processor.sweep_held(
                            self.publish, until=min(cutoffs.values()), partitions=cutoffs
                        )
                if refused:
                    log.info("held exam results refused", extra={"refused": refused})
                self.metrics.held_results.set(await self.redis.zcard(HELD_INDEX_KEY))
            except Exception as error:
                log.warning("held-result sweep failed (%r)", error)
            await asyncio.sleep(interval)

    async def _held_cutoffs(self, consumer: Any) -> dict[int, float]:
        """Per partition number assigned here, the input time (seconds) it has passed, for R3.6:
        the latest record time applied, by the registrations and by the merge, or the clock
        where nothing is held and nothing is left to read; none while it applied nothing yet."""
        numbers = {tp.partition for tp in consumer.assignment() if tp.topic in INPUT_TOPICS}
        clock = time.time()
        cutoffs: dict[int, float] = {}
        for number in numbers:
            merge = self._merges.get(number)
            behind = {
                topic
                for topic in INPUT_TOPICS
                if (merge is not None and merge.holds(topic))
                or await _lagging(consumer, topic, number)
            }
            if not behind:
                cutoffs[number] = clock
                continue
            if merge is None or merge.time is None:
                continue
            progress = merge.time
            if REGISTRATIONS_TOPIC in behind:
                registrations = merge.released_time.get(REGISTRATIONS_TOPIC)
                if registrations is None:
                    continue
                progress = min(progress, registrations)
            cutoffs[number] = progress / 1000
        return cutoffs

    def asyncapi(self) -> str:
        """The AsyncAPI 3.0 document of this wiring (served over HTTP, exported to contracts/).

        FastStream generates it; `asyncapi.complete` says what FastStream 0.7 cannot.
        """
        spec = self.specification()
        return json.dumps(complete_asyncapi(spec.to_specification().to_jsonable()))

    def specification(self) -> AsyncAPI:
        """FastStream's AsyncAPI factory of this wiring (for `asyncapi` and `faststream docs`)."""
        return AsyncAPI(
            self.broker,
            title="learning-account",
            version=__version__,
            description="The Flemish learning account (leerkrediet) as a message-driven service.",
        )

    # --- health -------------------------------------------------------------------------------

    async def is_ready(self) -> bool:
        if self._stopping or self._failures or self._stalled or not self._broker_started:
            return False
        try:
            redis_ok = bool(await asyncio.wait_for(self.store.ping(), timeout=2))
        except Exception:
            return False
        try:
            kafka_ok = await self.broker.ping(timeout=2)
        except Exception:
            return False
        return redis_ok and kafka_ok

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """HTTP first (liveness answers, readiness says 503), then Kafka, then the sweeper."""
        await self.start_http()
        await self._start_broker()
        await self.start_background()

    async def start_http(self) -> None:
        """Before the broker starts: the Redis mode (LA_REDIS_CLUSTER), then the HTTP API."""
        await self.redis.aclose()
        self.redis = self.store.redis = await redis_for(self.settings)
        config = uvicorn.Config(
            self.http,
            host=self.settings.http_host,
            port=self.settings.http_port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
        self._server = _QuietServer(config)
        http_task = asyncio.create_task(self._server.serve(), name="http")
        self._tasks.append(http_task)
        while not self._server.started:
            await asyncio.sleep(0.02)
            if http_task.done():
                await http_task  # raises the reason the server did not start

    async def start_background(self) -> None:
        """Once the broker runs: the merges' waits, the held-result sweeper and the partition
        watcher; ready."""
        self._tasks.append(asyncio.create_task(self._release_waiting(), name="merge-waits"))
        self._tasks.append(asyncio.create_task(self._sweep_held_results(), name="held-sweeper"))
        self._tasks.append(asyncio.create_task(self._watch_partitions(), name="partitions"))
        tune_gc(self.settings.gc_threshold)
        self._broker_started = True
        self.metrics.ready.set(1)
        log.info(
            "learning-account serving",
            extra={
                "kafka": self.settings.kafka_bootstrap_servers,
                "http": f"{self.settings.http_host}:{self.settings.http_port}",
                "group": self.settings.consumer_group,
                "publisher": "aiokafka" if self._aiokafka_producer() else "faststream",
            },
        )

    async def connect_broker(self) -> None:
        """Wait for Kafka as `start` does, for a runner that starts the broker itself."""
        await self._start_broker(connect_only=True)

    async def _start_broker(self, *, connect_only: bool = False) -> None:
        """Wait for Kafka (with backoff) instead of exiting when it is not up yet."""
        delay = 0.5
        while True:
            try:
                await self.broker.connect()
                await self._check_input_partitions()
                if not connect_only:
                    await self.broker.start()
                return
            except NotCoPartitioned:
                raise
            except Exception as error:
                log.warning("Kafka not reachable yet (%r); retrying in %.1fs", error, delay)
                with contextlib.suppress(Exception):
                    await self.broker.stop()
                await asyncio.sleep(delay)
                delay = min(10.0, delay * 2)

    async def _check_input_partitions(self) -> None:
        """Refuse to run unless the input topics that exist have the same partition count."""
        producer = self._aiokafka_producer()
        if producer is None:
            return
        cluster = await producer.client.fetch_all_metadata()
        counts = {
            topic: len(numbers)
            for topic in INPUT_TOPICS
            if (numbers := cluster.partitions_for_topic(topic))
        }
        check_co_partitioned(counts)

    async def stop(self) -> None:
        """Finish the batch in flight, commit it, leave the group, close everything."""
        await self.stop_consuming()
        await self.broker.stop()
        await self.close()

    async def stop_consuming(self) -> None:
        """Before the broker stops: finish the batch in flight and leave the group."""
        self._stopping = True
        self._stop_requested.set()
        self.metrics.ready.set(0)
        try:
            await asyncio.wait_for(
                self._in_flight.acquire(), timeout=self.settings.graceful_timeout_seconds
            )
        except TimeoutError:
            log.warning("in-flight batch did not finish in time; it will be re-delivered")
        consumer = getattr(self.subscriber, "consumer", None)
        if consumer is not None:
            await leave_group_if_first_generation(consumer)

    async def close(self) -> None:
        """Once the broker stopped: the HTTP API, the background tasks and Redis."""
        if self._server is not None:
            self._server.should_exit = True
        for task in self._tasks:
            if task.get_name() != "http":
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.redis.aclose()
        log.info("learning-account stopped")

    async def run(self) -> None:
        """Serve until SIGTERM or SIGINT."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        starting = asyncio.create_task(self.start())
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if starting.done():
                await starting  # raises if the start failed
                await stopping
        finally:
            if not starting.done():  # stopped while still waiting for Kafka
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await starting
            stopping.cancel()
            await self.stop()


def asyncapi_document(settings: Settings | None = None) -> str:
    """The AsyncAPI 3.0 document of the service, generated by FastStream from the code."""
    return Service(settings or Settings()).asyncapi()


class _QuietServer(uvicorn.Server):
    """uvicorn inside our own loop: the service handles the signals, not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclasses.dataclass(slots=True)
class _Progress:
    """The committed offset a partition was last seen at, and since when (monotonic seconds)."""

    offset: int | None
    since: float


class _DropMerges(ConsumerRebalanceListener):  # type: ignore[misc]
    """On a rebalance, what the merges hold of revoked partitions is read again by their owner."""

    def __init__(self, service: Service) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        self.service.drop_merges(revoked)

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self.service.drop_merges(assigned)  # they are read from the committed offsets


def _prefetched(consumer: Any, topic: str, number: int) -> bool:
    """Whether the client holds fetched records of the topic-partition not yet handed out (a
    private aiokafka buffer: False if a release moves it)."""
    buffered = getattr(getattr(consumer, "_fetcher", None), "_records", None)
    return isinstance(buffered, Mapping) and TopicPartition(topic, number) in buffered


async def _lagging(consumer: Any, topic: str, number: int) -> bool:
    """Whether the topic-partition has records to read that are not fetched yet."""
    partition = TopicPartition(topic, number)
    highwater = consumer.highwater(partition)
    if highwater is None:
        return partition in consumer.assignment()  # assigned, nothing fetched yet
    try:
        position = await asyncio.wait_for(consumer.position(partition), timeout=0.5)
    except Exception:  # not assigned (any more), or no position yet
        return False
    return bool(position < highwater)


def _input_record(record: ConsumerRecord[Any, Any]) -> InputRecord:
    return InputRecord(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        timestamp_ms=record.timestamp,
        headers=tuple(record.headers),
    )


def create_app() -> FastStream:
    """The service as a FastStream application, wired from the environment (LA_*).

    `faststream run learning_account.entrypoints.consumer:create_app --factory` serves what
    `learning-account serve` does;
    `faststream docs gen learning_account.entrypoints.consumer:create_app --factory` writes its
    AsyncAPI document. FastStream starts and stops the broker; its hooks run the rest of
    `Service.start` / `Service.stop` around it.
    """
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(error, file=sys.stderr)  # one line, no traceback, as every command does
        raise SystemExit(2) from None
    configure(settings.log_level, json_lines=True)
    service = Service(settings)
    return FastStream(
        service.broker,
        specification=service.specification(),
        on_startup=[service.start_http, service.connect_broker],
        after_startup=[service.start_background],
        on_shutdown=[service.stop_consuming],
        after_shutdown=[service.close],
    )
