"""Where the test stack's broker and Redis come from: containers or local processes."""

from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Any

BACKENDS = ("local", "testcontainers")
DEFAULT_KAFKA_IMAGE = "confluentinc/cp-kafka:7.6.0"
DEFAULT_REDIS_IMAGE = "redis:7-alpine"


class StackError(RuntimeError):
    """The stack could not be started, or the service did not answer as expected."""


class DockerUnavailable(StackError):
    """``testcontainers`` backend chosen but no Docker engine answers."""


def docker_available(timeout: float = 5.0) -> tuple[bool, str]:
    """Whether a Docker engine answers a ping (and the reason when it does not)."""
    try:
        docker: Any = importlib.import_module("docker")
    except ImportError:
        return (
            False,
            "the docker package is not installed (pip install 'testcontainers[kafka,redis]')",
        )
    try:
        client = docker.from_env(timeout=int(timeout))
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return False, f"Docker is not reachable: {exc!r}"
    return True, ""


def resolve_backend(backend: str | None = None) -> str:
    """``local`` or ``testcontainers``: the argument, else ``LA_TEST_BACKEND``, else auto."""
    choice = (backend or os.environ.get("LA_TEST_BACKEND", "") or "auto").strip().lower()
    if choice == "auto":
        has_testcontainers = importlib.util.find_spec("testcontainers") is not None
        return "testcontainers" if has_testcontainers and docker_available()[0] else "local"
    if choice not in BACKENDS:
        raise StackError(
            f"LA_TEST_BACKEND must be 'local', 'testcontainers' or 'auto', not {choice!r}"
        )
    return choice


def kafka_container() -> Any:
    """A Kafka container in KRaft mode (``LA_TEST_KAFKA_IMAGE``), not started."""
    kafka_class = _container_class("kafka", "KafkaContainer")
    return kafka_class(os.environ.get("LA_TEST_KAFKA_IMAGE", DEFAULT_KAFKA_IMAGE)).with_kraft()


def redis_container() -> Any:
    """A Redis container (``LA_TEST_REDIS_IMAGE``), not started."""
    redis_class = _container_class("redis", "RedisContainer")
    return redis_class(os.environ.get("LA_TEST_REDIS_IMAGE", DEFAULT_REDIS_IMAGE))


def _container_class(module: str, name: str) -> Any:
    try:
        try:  # testcontainers >= 4.14 moved the modules to testcontainers.community
            return getattr(importlib.import_module(f"testcontainers.community.{module}"), name)
        except ImportError:
            return getattr(importlib.import_module(f"testcontainers.{module}"), name)
    except ImportError as exc:
        raise StackError(
            "LA_TEST_BACKEND=testcontainers needs testcontainers: "
            "pip install 'testcontainers[kafka,redis]>=4.8'"
        ) from exc
