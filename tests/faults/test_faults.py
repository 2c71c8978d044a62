"""Effectively-once under crashes, rebalances, outages and bad input, on real processes.

Every scenario sends the same ≥10,000-event workload (duplicates and bad messages mixed in),
breaks something mid-stream, lets the system recover and then checks: every account equals what
the pure core computes from the same events; every expected output id is on the output topics;
an output seen twice has the same bytes; the dead-letter topic holds exactly the bad messages.
Figures go to tests/artifacts/faults-<scenario>.json.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from harness import FaultReport, Feed, stored_accounts, verify
from stack import GROUP, Stack
from workload import Workload

from support.redis import database_url
from support.service import ServiceProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

BIG_PHASE = 2  # the first exam-results phase: more than half of the events


def assert_clean(report: FaultReport) -> None:
    report.write()
    assert report.state_mismatches == 0, report.notes
    assert report.lost == 0, report.notes
    assert report.doubled == 0, report.notes
    assert report.dead_letters == report.bad_sent, report.notes


async def feed_and_verify(
    stack: Stack,
    workload: Workload,
    report: FaultReport,
    running: Sequence[ServiceProcess],
    during: Callable[[Feed, int], Awaitable[None]] | None = None,
) -> None:
    """Send the workload (`during(feed, phase)` after each phase is sent), stop the services
    still running, compare everything with the oracle and assert that nothing went wrong."""
    started = time.monotonic()
    async with Feed(stack.bootstrap, GROUP, workload) as feed:
        await feed.run(None if during is None else functools.partial(during, feed))
    report.total_seconds = round(time.monotonic() - started, 2)
    for service in running:
        service.stop()
    await verify(report, workload, stack.bootstrap, stack.redis.url)
    assert_clean(report)


async def test_sigkill_mid_stream_three_times(started_stack: Stack, workload: Workload) -> None:
    report = FaultReport("sigkill")
    service = started_stack.service()
    service.start()

    async def kill_midway(feed: Feed, phase: int) -> None:
        if phase not in (0, BIG_PHASE, 4):
            return
        done = await feed.wait_progress(0.0)
        await asyncio.sleep(0.3)
        done = await feed.progress()
        service.kill()
        killed = time.monotonic()
        report.notes.append(f"SIGKILL in phase {phase} at {done:.0%} committed")
        service.start()
        report.recovery_seconds.append(round(time.monotonic() - killed, 2))

    await feed_and_verify(started_stack, workload, report, [service], kill_midway)


async def test_instances_join_and_die_while_batches_are_in_flight(
    started_stack: Stack, workload: Workload
) -> None:
    report = FaultReport("rebalance")
    # small batches: many commits in flight while partitions move
    first, second = (started_stack.service(BATCH_MAX_RECORDS="50") for _ in range(2))
    first.start()
    second.start()
    third = started_stack.service(BATCH_MAX_RECORDS="50")

    async def churn(feed: Feed, phase: int) -> None:
        if phase == BIG_PHASE:  # a third instance joins: partitions move mid-phase
            third.start(wait_ready=False)
            report.notes.append(f"third joined at {await feed.progress():.0%} committed")
        if phase == BIG_PHASE + 1:
            await feed.wait_progress(0.97)
        if phase == 4:  # one of the first two dies while its batches are in flight
            done = await feed.progress()
            first.kill()
            report.notes.append(f"first SIGKILLed at {done:.0%} committed")
            report.recovery_seconds.append(await feed.wait_for_advance())

    await feed_and_verify(started_stack, workload, report, [second, third], churn)


async def test_redis_outage_stops_commits_and_recovers(
    started_stack: Stack, workload: Workload
) -> None:
    report = FaultReport("redis-outage")
    service = started_stack.service()
    service.start()

    async def outage(feed: Feed, phase: int) -> None:
        if phase != BIG_PHASE:
            return
        await asyncio.sleep(0.3)
        await started_stack.redis.astop()
        stopped = time.monotonic()
        await asyncio.sleep(2)
        committed_early = await feed.committed()
        status = await asyncio.to_thread(service.get, "/health/ready")
        await asyncio.sleep(8)
        committed_late = await feed.committed()
        assert status[0] == 503, status
        assert service.process is not None and service.process.poll() is None
        assert committed_late == committed_early, "offsets were committed without Redis"
        report.notes.append(
            f"Redis down {time.monotonic() - stopped:.1f}s; ready answered {status[0]};"
            " no offset committed meanwhile"
        )
        await started_stack.redis.astart()
        report.recovery_seconds.append(await feed.wait_for_advance())

    await feed_and_verify(started_stack, workload, report, [service], outage)


async def test_service_started_before_the_broker_waits_without_spinning(
    stack: Stack, workload: Workload
) -> None:
    report = FaultReport("broker-late")
    service = stack.service()
    service.start(wait_ready=False)
    await asyncio.sleep(10)
    assert service.process is not None and service.process.poll() is None, service.log_tail()
    assert (await asyncio.to_thread(service.get, "/health/live"))[0] == 200
    assert (await asyncio.to_thread(service.get, "/health/ready"))[0] == 503
    cpu = _cpu_seconds(service.process.pid)
    report.notes.append(f"broker absent 10s: alive, ready=503, {cpu:.2f} CPU s used")
    assert cpu < 5, "the service spins while the broker is away"
    await stack.start_broker()
    came_up = time.monotonic()
    await asyncio.to_thread(service.wait_ready, 60)
    report.recovery_seconds.append(round(time.monotonic() - came_up, 2))
    await feed_and_verify(stack, workload, report, [service])


async def test_sigterm_finishes_the_batch_commits_and_resumes_exactly(
    started_stack: Stack, workload: Workload
) -> None:
    report = FaultReport("sigterm")
    service = started_stack.service()
    service.start()

    async def terminate(feed: Feed, phase: int) -> None:
        if phase != BIG_PHASE:
            return
        await asyncio.sleep(0.3)
        signalled = time.monotonic()
        code = await asyncio.to_thread(service.stop, 20)
        took = time.monotonic() - signalled
        report.notes.append(f"SIGTERM: exit code {code} after {took:.1f}s")
        assert code == 0, service.log_tail()
        assert took < 10 + 5
        service.start()
        report.recovery_seconds.append(round(time.monotonic() - signalled, 2))

    await feed_and_verify(started_stack, workload, report, [service], terminate)
    # a graceful stop commits what it published: after the restart nothing is re-delivered,
    # so outputs are re-published only for the duplicates that were sent
    assert report.duplicate_outputs_absorbed == workload.republished, report


async def test_rebuild_from_history_equals_the_live_accounts(
    started_stack: Stack, workload: Workload, tmp_path: object
) -> None:
    from learning_account.ops.rebuild import rebuild
    from learning_account.settings import Settings

    report = FaultReport("rebuild")
    service = started_stack.service()
    service.start()
    async with Feed(started_stack.bootstrap, GROUP, workload) as feed:
        await feed.run()
    service.stop()
    live = await verify(report, workload, started_stack.bootstrap, started_stack.redis.url)
    assert live.state_mismatches == 0
    rebuilt_url = database_url(started_stack.redis.url, 5)
    settings = Settings.from_env({"LA_KAFKA_BOOTSTRAP_SERVERS": started_stack.bootstrap})
    started = time.monotonic()
    outcome = await rebuild(settings, redis_url=rebuilt_url)
    report.total_seconds = round(time.monotonic() - started, 2)
    report.notes.append(f"rebuild: {outcome}")
    rebuilt = FaultReport("rebuild")
    await verify(rebuilt, workload, started_stack.bootstrap, rebuilt_url)
    report.state_mismatches = rebuilt.state_mismatches
    report.write()
    assert outcome.dead_lettered == len(workload.bad)
    assert rebuilt.state_mismatches == 0, rebuilt.notes


async def test_rebuild_equals_live_with_skewed_producer_clocks(
    started_stack: Stack, workload: Workload
) -> None:
    """Producer clocks off per topic (exam results 40 s behind, deregistrations 80 s behind, so
    by record time phases interleave) and the service down while the workload is produced: live
    catches up on the backlog, and a rebuild from the same topics gives exactly its accounts."""
    from learning_account.adapters.state_codec import encode_account
    from learning_account.ops.rebuild import rebuild
    from learning_account.settings import Settings
    from learning_account.wire import DEREGISTRATIONS_TOPIC, EXAM_RESULTS_TOPIC

    report = FaultReport("rebuild-skewed")
    skew = {EXAM_RESULTS_TOPIC: -40_000, DEREGISTRATIONS_TOPIC: -80_000}
    async with Feed(started_stack.bootstrap, GROUP, workload, skew_ms=skew) as feed:
        for index in range(len(workload.phases)):
            await feed.send_phase(index)
        service = started_stack.service()
        started = time.monotonic()
        service.start()
        await feed.wait_committed()
        report.total_seconds = round(time.monotonic() - started, 2)
    service.stop()
    rebuilt_url = database_url(started_stack.redis.url, 6)
    settings = Settings.from_env({"LA_KAFKA_BOOTSTRAP_SERVERS": started_stack.bootstrap})
    outcome = await rebuild(settings, redis_url=rebuilt_url)
    report.notes.append(f"rebuild: {outcome}")

    async def states(url: str) -> list[dict[str, Any] | None]:
        found = await stored_accounts(url, workload.students)
        return [None if account is None else encode_account(account) for account in found]

    live, rebuilt = await states(started_stack.redis.url), await states(rebuilt_url)
    report.state_mismatches = sum(a != b for a, b in zip(live, rebuilt, strict=True))
    report.write()
    assert sum(state is not None for state in live) == len(workload.students)
    assert report.state_mismatches == 0, report.notes
    assert outcome.dead_lettered == len(workload.bad)


async def test_hostile_records_are_applied_or_dead_lettered_and_the_consumer_goes_on(
    started_stack: Stack, hostile_workload: Workload
) -> None:
    """Compressed batches of every codec, headers with null values or non-UTF-8 names and
    values, and bad records stamped in microseconds, mixed into the standard workload."""
    report = FaultReport("hostile-input")
    hostile = [r for phase in hostile_workload.phases for r in phase.hostile]
    report.notes.append(
        f"{len(hostile)} hostile records: {sum(r.codec is not None for r in hostile)} compressed,"
        f" {sum(bool(r.headers) for r in hostile)} with odd headers,"
        f" {sum(r.bad for r in hostile)} bad"
    )
    service = started_stack.service()
    service.start()

    async def still_ready(feed: Feed, phase: int) -> None:
        await feed.wait_committed()
        status = await asyncio.to_thread(service.get, "/health/ready")
        assert status[0] == 200, (phase, status, service.log_tail())

    await feed_and_verify(started_stack, hostile_workload, report, [service], still_ready)
    assert report.dead_letter_codes["bad-usec"] == "not_json", report.dead_letter_codes
    assert report.dead_letter_codes["bad-null-header"] == "invalid_envelope"
    assert report.dead_letter_codes["bad-lz4"] == "not_json"


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks
