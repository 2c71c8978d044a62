"""Records for the Processor, and an in-memory store that lets a test write between the
Processor's load and its commit."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from learning_account.processing.pipeline import InputRecord
from learning_account.processing.store import AccountWrite
from learning_account_dev import events as ev
from learning_account_dev.memory_store import MemoryStore

RECORD_TIME_MS = 1_700_000_000_000


class Records:
    """Input records with increasing offsets per topic, keyed by student, all at one time."""

    def __init__(self) -> None:
        self._offsets: dict[str, int] = {}

    def __call__(self, event: dict[str, Any] | bytes, topic: str | None = None) -> InputRecord:
        value = event if isinstance(event, bytes) else ev.to_bytes(event)
        topic = topic or ev.topic_of(event)  # type: ignore[arg-type]
        offset = self._offsets[topic] = self._offsets.get(topic, -1) + 1
        key = b"key" if isinstance(event, bytes) else event["subject"].encode()
        return InputRecord(topic, 0, offset, key, value, RECORD_TIME_MS)


class Interleaving(MemoryStore):
    """Runs `before_commit` just before each of its next `times` commits, as a concurrent
    writer would (the hook's own commits run without it)."""

    before_commit: Callable[[], Awaitable[Any]] | None = None
    times = 1
    _in_hook = False

    async def commit(self, writes: Iterable[AccountWrite]) -> dict[str, bool]:
        writes = list(writes)
        if self.before_commit is not None and self.times > 0 and not self._in_hook:
            self.times -= 1
            self._in_hook = True
            try:
                await self.before_commit()
            finally:
                self._in_hook = False
        return await super().commit(writes)
