"""The `learning_account_dev.testing` plugin, used the way a downstream team would use it.

The plugin loads only where it is asked for: a downstream project names it in its root
conftest.py (`pytest_plugins = ["learning_account_dev.testing"]`) or runs
`pytest -p learning_account_dev.testing`; here the test module requires the plugin itself.
The backend is whatever LA_TEST_BACKEND says (`local` on this machine: Tansu + redis-server).
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
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


def test_the_plugin_loads_only_where_asked_for(tmp_path: Path) -> None:
    """A pytest run elsewhere does not have the fixture; with `-p` it has it."""
    (tmp_path / "test_downstream.py").write_text(
        "def test_stack(learning_account_stack):\n    pass\n"
    )

    def pytest_run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    without = pytest_run("-q", "test_downstream.py")
    assert without.returncode != 0
    assert "fixture 'learning_account_stack' not found" in without.stdout
    listed = pytest_run("-p", "learning_account_dev.testing", "--fixtures", "test_downstream.py")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "learning_account_stack" in listed.stdout
    assert "learning_account_service_env" in listed.stdout
