"""The `learning_account_dev.testing` plugin, used the way a downstream team would use it.

A downstream project would install learning-account and get the fixture through the plugin's
entry point (or `-p learning_account_dev.testing`); here the test module requires the plugin itself.
The backend is whatever LA_TEST_BACKEND says (`local` on this machine: Tansu + redis-server).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from learning_account.adapters.clock import current_academic_year
from learning_account.wire import (
    BALANCE_CHANGED_TOPIC,
    CREDIT_LOW_TOPIC,
    DEAD_LETTER_TOPIC,
    REGISTRATIONS_TOPIC,
)
from learning_account_dev import events

if TYPE_CHECKING:  # imported in the tests: pytest_plugins below must be the first import,
    # or pytest cannot rewrite the plugin's asserts (PytestAssertRewriteWarning)
    from learning_account_dev.testing import LearningAccountStack

pytest_plugins = ["learning_account_dev.testing"]


async def test_low_balance_is_announced_and_visible(
    learning_account_stack: LearningAccountStack,
) -> None:
    from learning_account_dev.testing import caused_by

    stack = learning_account_stack
    student = f"dn-{uuid.uuid4().hex[:10]}"
    year = current_academic_year()  # this year: no rebuild years projected onto the balance
    # 15 x 6 = 90 credits invested: 140 - 90 = 50, below the threshold of 60
    registration = events.registration(student, year, events.package("U", 15, 6))

    await stack.send(registration)

    [low] = await stack.wait_for(CREDIT_LOW_TOPIC, caused_by(registration), timeout=60)
    assert low["type"] == "be.flanders.learning-account.credit-low.v1"
    assert low["subject"] == student
    assert low["data"]["balance"] == 50
    assert low["data"]["threshold"] == 60
    [changed] = await stack.wait_for(BALANCE_CHANGED_TOPIC, caused_by(registration), timeout=60)
    assert changed["data"]["previous_balance"] == 0
    assert changed["data"]["balance"] == 50
    assert changed["data"]["delta"] == 50  # opened +140, invested -90

    account = await stack.account(student)
    assert account is not None
    assert account["balance"] == 50
    assert account["exhausted"] is False
    statement = await stack.statement(student)
    assert statement is not None
    assert statement["years"][-1]["balance"] == 50
    assert await stack.account(f"nobody-{uuid.uuid4().hex[:6]}") is None


async def test_context_manager_and_bad_input_go_to_dead_letter() -> None:
    """The context manager on its own, with the local backend; a bad record is dead-lettered."""
    from learning_account_dev.testing import LearningAccountStack

    async with LearningAccountStack("local") as stack:
        assert stack.bootstrap_servers.startswith("127.0.0.1:")
        assert stack.redis_url.startswith("redis://127.0.0.1:")
        await stack.send_raw(REGISTRATIONS_TOPIC, "broken", b"{not json")
        [dead] = await stack.wait_for(
            DEAD_LETTER_TOPIC, lambda m: m["data"]["key"] == "broken", timeout=60
        )
        assert dead["data"]["payload"] == "{not json"
        status, _ = await stack.get("/health/ready")
        assert status == 200
    assert stack.service_log is not None
