"""Shared helpers for the test suite (import as ``support``; tests/conftest.py puts tests/ on
sys.path)."""

from .kafka import (
    ConsumedRecord,
    consume,
    consume_to_end,
    create_topics,
    produce_json,
    stop_consumer,
    unique_topic,
)
from .redis import RestartableRedis

__all__ = [
    "ConsumedRecord",
    "RestartableRedis",
    "consume",
    "consume_to_end",
    "create_topics",
    "produce_json",
    "stop_consumer",
    "unique_topic",
]
