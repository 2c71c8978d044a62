"""The held-result sweeper: exam results held past their deadline are refused (R3.6).

A result is held until its registration arrives or its hold runs out in input time. Each sweep
asks every assigned partition number how far its input has come, and the processor refuses the
held results whose deadline lies before the least of those times.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from learning_account.adapters.publisher import Publisher
from learning_account.entrypoints.consumer import BatchConsumer, lagging
from learning_account.entrypoints.readiness import Health
from learning_account.observability.metrics import Metrics
from learning_account.processing.pipeline import Processor
from learning_account.processing.store import AccountStore
from learning_account.wire import INPUT_TOPICS, REGISTRATIONS_TOPIC

log = logging.getLogger("learning_account")


class HeldSweeper:
    """Sweeps every `interval` seconds until the service stops; `la_held_results` meanwhile."""

    def __init__(
        self,
        batches: BatchConsumer,
        processor: Processor,
        publisher: Publisher,
        store: AccountStore,
        health: Health,
        metrics: Metrics,
        *,
        interval: float,
    ) -> None:
        self.batches = batches
        self.processor = processor
        self.publisher = publisher
        self.store = store
        self.health = health
        self.metrics = metrics
        self.interval = interval

    async def run(self) -> None:
        while not self.health.stopping:
            try:
                refused = 0
                consumer = self.batches.consumer
                # under the batch lock: a released record is applied before its time counts, and
                # snapshots of one student go out in commit order
                async with self.batches.in_flight:
                    cutoffs = {} if consumer is None else await self.cutoffs(consumer)
                    if cutoffs and not self.health.stopping:
                        refused = await self.processor.sweep_held(
                            self.publisher.publish, until=min(cutoffs.values()), partitions=cutoffs
                        )
                if refused:
                    log.info("held exam results refused", extra={"refused": refused})
                self.metrics.held_results.set(await self.store.held_count())
            except Exception as error:
                log.warning("held-result sweep failed (%r)", error)
            await asyncio.sleep(self.interval)

    async def cutoffs(self, consumer: Any) -> dict[int, float]:
        """Per partition number assigned here, the input time (seconds) it has passed, for R3.6:
        the latest record time applied, by the registrations and by the merge, or the clock
        where nothing is held and nothing is left to read; none while it applied nothing yet."""
        numbers = {tp.partition for tp in consumer.assignment() if tp.topic in INPUT_TOPICS}
        clock = time.time()
        cutoffs: dict[int, float] = {}
        for number in numbers:
            merge = self.batches.merge(number)
            behind = {
                topic
                for topic in INPUT_TOPICS
                if (merge is not None and merge.holds(topic))
                or await lagging(consumer, topic, number)
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
