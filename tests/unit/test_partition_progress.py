"""The consumer's lag gauge and stall verdict, from a consumer's assignment, commits and ends."""

from __future__ import annotations

import pytest

from learning_account.bootstrap import build_service
from learning_account.entrypoints.consumer import Partition
from learning_account.entrypoints.service import Service
from learning_account.settings import Settings

A, B = Partition("in", 0), Partition("in", 1)


class FakeConsumer:
    """What the service asks of its group consumer: assignment, offsets, ends."""

    def __init__(self) -> None:
        self.assigned = {A, B}
        self.ends = {A: 10, B: 4}
        self.commits = {A: 5}
        self.positions: dict[Partition, int] = {}

    def assignment(self) -> set[Partition]:
        return set(self.assigned)

    def highwater(self, partition: Partition) -> int | None:
        return self.ends.get(partition)

    async def committed(self, partition: Partition) -> int | None:
        return self.commits.get(partition)

    def position(self, partition: Partition) -> int | None:
        return self.positions.get(partition, self.commits.get(partition, 0))


def lags(service: Service) -> dict[str, float]:
    return {
        sample.labels["partition"]: sample.value
        for metric in service.metrics.consumer_lag.collect()
        for sample in metric.samples
    }


async def test_lag_is_reported_for_every_assigned_partition_and_removed_when_revoked() -> None:
    service = build_service(Settings(stall_seconds=60))
    consumer = FakeConsumer()
    await service.progress.check(consumer, now=0.0)
    assert lags(service) == {"0": 5, "1": 4}  # B: nothing committed yet, all of it to read
    consumer.assigned = {B}
    await service.progress.check(consumer, now=1.0)
    assert lags(service) == {"1": 4}
    await service.redis.aclose()


async def test_a_partition_with_records_and_no_progress_for_the_window_is_a_stall() -> None:
    service = build_service(Settings(stall_seconds=60))
    consumer = FakeConsumer()
    consumer.ends[B] = 0  # nothing to read there: never a stall
    await service.progress.check(consumer, now=0.0)
    await service.progress.check(consumer, now=59.0)
    assert not service.health.stalled
    await service.progress.check(consumer, now=61.0)
    assert service.health.stalled
    assert not await service.health.is_ready()
    service.batches.committed[A] = 7  # a batch committed: progress, the window starts again
    await service.progress.check(consumer, now=62.0)
    assert not service.health.stalled
    assert lags(service)["0"] == 3
    await service.progress.check(consumer, now=130.0)
    assert service.health.stalled
    service.batches.committed[A] = 10  # caught up: nothing left to read is no stall
    await service.progress.check(consumer, now=131.0)
    assert not service.health.stalled
    await service.redis.aclose()


async def test_a_trailing_control_record_is_no_stall_but_a_stuck_batch_is() -> None:
    service = build_service(Settings(stall_seconds=60))
    consumer = FakeConsumer()
    consumer.assigned = {A}
    service.batches.committed[A] = 9
    consumer.positions[A] = 10  # past a transaction marker at offset 9: no record to read
    await service.progress.check(consumer, now=0.0)
    await service.progress.check(consumer, now=100.0)
    assert (service.health.stalled, lags(service)) == (False, {"0": 0})
    service.batches.applying = True  # a batch in flight that never ends: the position is moot
    await service.progress.check(consumer, now=101.0)
    await service.progress.check(consumer, now=200.0)
    assert (service.health.stalled, lags(service)) == (True, {"0": 1})
    await service.redis.aclose()


@pytest.mark.parametrize("text", ["0", "-5", "soon", "inf", "nan", ""])
def test_the_stall_window_is_a_number_of_seconds_above_zero(text: str) -> None:
    assert Settings.from_env({}).stall_seconds == 60
    assert Settings.from_env({"LA_STALL_SECONDS": "2.5"}).stall_seconds == 2.5
    with pytest.raises(ValueError, match="LA_STALL_SECONDS"):
        Settings.from_env({"LA_STALL_SECONDS": text})
