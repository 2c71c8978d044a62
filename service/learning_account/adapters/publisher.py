"""Publishing a batch's outputs: every record sent, then every acknowledgement awaited."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from learning_account.adapters.clients import ServiceKafka
from learning_account.observability.metrics import Metrics
from learning_account.processing.outputs import OutputMessage
from learning_account.wire import STRUCTURED_HEADERS


class Publisher:
    """Sends finished CloudEvents with the service's own aiokafka producer.

    One by one (not a batch call) so each record goes to its key's partition, in order; all are
    sent before any acknowledgement is awaited. FastStream's publishers only document the output
    topics (in the AsyncAPI document).
    """

    def __init__(self, kafka: ServiceKafka, metrics: Metrics) -> None:
        self.kafka = kafka
        self.metrics = metrics

    async def publish(self, messages: Sequence[OutputMessage]) -> None:
        producer = self.kafka.producer
        pending = [
            await producer.send(
                message.topic, message.value, key=message.key, headers=list(STRUCTURED_HEADERS)
            )
            for message in messages
        ]
        if pending:
            await asyncio.gather(*pending)
        for message in messages:
            self.metrics.outputs_published.labels(topic=message.topic).inc()
