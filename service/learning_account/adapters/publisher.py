"""Publishing a batch's outputs: every record produced, then every acknowledgement awaited."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from learning_account.adapters.clients import ServiceKafka, deliver
from learning_account.observability.metrics import Metrics
from learning_account.processing.outputs import OutputMessage
from learning_account.wire import STRUCTURED_HEADERS


class Publisher:
    """Sends finished CloudEvents with the service's own librdkafka producer (`clients.deliver`).

    Each record goes to its key's partition, in the order given; all are produced before the
    acknowledgements are awaited, and a record the broker did not acknowledge raises (the
    consumer then reads the batch again). FastStream's publishers only document the output
    topics (in the AsyncAPI document).
    """

    def __init__(self, kafka: ServiceKafka, metrics: Metrics) -> None:
        self.kafka = kafka
        self.metrics = metrics

    async def publish(self, messages: Sequence[OutputMessage]) -> None:
        if not messages:
            return
        headers = list(STRUCTURED_HEADERS)
        await deliver(self.kafka.producer, ((m.topic, m.key, m.value, headers) for m in messages))
        published = self.metrics.outputs_published
        for topic, count in Counter(message.topic for message in messages).items():
            published.labels(topic=topic).inc(count)
